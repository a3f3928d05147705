"""A person at thumbnail-on-create's gallery, in headless Chromium (Playwright driving Debian's
chromium): uploads two images, watches their thumbnails arrive without a reload, runs the job
button, reads the history, tries one image, and clears the bucket after typing its name.

Usage: gallery_browser.py BASE_URL TOKEN BUCKET IMAGE NO_EXTENSION_IMAGE SHOTS_DIR RESULTS

Each step writes `pass NAME` or `fail NAME: why` to RESULTS; a step that fails ends the run,
since the later ones stand on it. Screenshots go to SHOTS_DIR.
"""

import sys
import traceback

from playwright.sync_api import sync_playwright

base, token, bucket, image, no_extension, shots, results_path = sys.argv[1:8]
no_extension_key = no_extension.rsplit("/", 1)[-1]
results = open(results_path, "w")

# How long a thumbnail may take to appear: the folder's events settle for a second and are
# polled every half second, the page looks every 1.5 s; a debug build makes the thumbnail.
APPEAR_MS = 60_000


def step(name, action):
    try:
        action()
    except Exception as error:
        results.write(f"fail {name}: {type(error).__name__}: {error}\n")
        results.flush()
        traceback.print_exc()
        raise SystemExit(1)
    results.write(f"pass {name}\n")
    results.flush()


def mark(page):
    """A value that lives only as long as this document: gone after a reload or navigation."""
    page.evaluate("window.__not_reloaded = true")


def still_marked(page):
    return page.evaluate("window.__not_reloaded === true")


def wait_for_thumbnails(page, key):
    tile = page.locator(f'.tile[data-key="{key}"]')
    tile.wait_for(timeout=APPEAR_MS)
    # Every size of the tile holds an image that loaded, and none is still N/A.
    page.wait_for_function(
        """key => {
            const tile = [...document.querySelectorAll('.tile')].find(t => t.dataset.key === key);
            if (!tile) return false;
            const pics = tile.querySelectorAll('.pic');
            return pics.length > 0 && [...pics].every(pic => {
                const img = pic.querySelector('img');
                return img && img.complete && img.naturalWidth > 0;
            });
        }""",
        arg=key,
        timeout=APPEAR_MS,
    )


with sync_playwright() as playwright:
    browser = playwright.chromium.launch(
        executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
    )
    context = browser.new_context(
        http_credentials={"username": "e2e", "password": token},
        viewport={"width": 1280, "height": 900},
    )
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    def the_gallery_opens_with_the_image_already_there():
        answer = page.goto(f"{base}/gallery")
        assert answer.status == 200, f"GET /gallery: {answer.status}"
        assert page.locator('.tile[data-key="before.jpg"] .na').count() > 0, (
            "the image that was there before serving should be N/A: "
            + page.inner_text("#images")
        )

    step("the gallery opens, the earlier image N/A", the_gallery_opens_with_the_image_already_there)

    def two_uploads_get_thumbnails_without_a_reload():
        page.set_input_files('input[name="images"]', [image, no_extension])
        with page.expect_navigation():
            page.click("text=Upload Image")
        notice = page.inner_text(".notice")
        assert "lake.jpg" in notice and no_extension_key in notice, f"after uploading: {notice}"
        mark(page)
        for key in ("lake.jpg", no_extension_key):
            wait_for_thumbnails(page, key)
        assert still_marked(page), "the page reloaded to show the thumbnails"

    step("two uploads, one without extension, get thumbnails in place", two_uploads_get_thumbnails_without_a_reload)
    page.screenshot(path=f"{shots}/gallery.png", full_page=True)

    def the_job_button_makes_the_missing_thumbnail():
        with page.expect_navigation():
            page.click("#run-job")
        mark(page)
        wait_for_thumbnails(page, "before.jpg")
        assert still_marked(page), "the page reloaded to show the thumbnails"

    step("the job runner makes the earlier image's thumbnails", the_job_button_makes_the_missing_thumbnail)

    def the_history_shows_uploads_and_the_sweep():
        answer = page.goto(f"{base}/events/history")
        assert answer.status == 200, f"GET /events/history: {answer.status}"
        text = page.inner_text("body")
        for wanted in ("lake.jpg", no_extension_key, "before.jpg", "sweep"):
            assert wanted in text, f"{wanted!r} missing from the history: {text[:2000]}"
        page.screenshot(path=f"{shots}/gallery-history.png", full_page=True)

    step("the history lists the uploads' events and the sweep", the_history_shows_uploads_and_the_sweep)

    def try_one_shows_a_thumbnail_and_stores_nothing():
        page.goto(f"{base}/gallery")
        tiles = page.locator(".tile").count()
        page.set_input_files('input[name="image"]', image)
        mark(page)
        page.click("text=Make its thumbnail")
        page.wait_for_function(
            """() => { const img = document.querySelector('#tried img');
                       return img && img.complete && img.naturalWidth > 0; }""",
            timeout=APPEAR_MS,
        )
        assert still_marked(page), "Try one left the page"
        page.reload()
        assert page.locator(".tile").count() == tiles, "Try one stored an image"

    step("Try one shows a thumbnail and stores nothing", try_one_shows_a_thumbnail_and_stores_nothing)

    def the_page_fits_a_phone():
        phone = browser.new_context(
            http_credentials={"username": "e2e", "password": token},
            viewport={"width": 390, "height": 844},
            device_scale_factor=2,
            is_mobile=True,
        )
        small = phone.new_page()
        small.goto(f"{base}/gallery")
        wide = small.evaluate("document.documentElement.scrollWidth")
        assert wide <= 390, f"the page is {wide} px wide on a 390 px phone"
        small.screenshot(path=f"{shots}/gallery-phone.png", full_page=True)
        phone.close()

    step("the page fits a phone without sideways scrolling", the_page_fits_a_phone)

    def clear_needs_the_name_then_empties_the_bucket():
        page.goto(f"{base}/gallery")
        page.fill('input[name="confirm"]', "not-" + bucket)
        with page.expect_navigation():
            page.click("text=Clear bucket")
        refusal = page.inner_text("body")
        assert "nothing was deleted" in refusal, f"clearing with a wrong name answered: {refusal}"
        page.goto(f"{base}/gallery")
        assert page.locator(".tile").count() > 0, "cleared without the bucket's name"
        page.fill('input[name="confirm"]', bucket)
        with page.expect_navigation():
            page.click("text=Clear bucket")
        assert page.locator(".tile").count() == 0, page.inner_text("#images")
        assert "No images yet" in page.inner_text("body")

    step("Clear bucket asks for the name, then empties it", clear_needs_the_name_then_empties_the_bucket)

    def no_script_errors():
        assert not errors, f"script errors on the page: {errors}"

    step("the page's script ran without errors", no_script_errors)
    browser.close()
