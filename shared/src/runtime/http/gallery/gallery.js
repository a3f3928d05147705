// The gallery's few lines of script: thumbnails appear as they are made, and an image dropped
// or picked under "Try one" shows its thumbnail in place. The page works without it.
"use strict";

function pending() {
  return document.querySelectorAll(".pic[data-src]");
}

async function poll() {
  if (pending().length === 0) return;
  try {
    const answer = await fetch("/gallery/state" + location.search, { headers: { accept: "application/json" } });
    if (answer.ok) {
      const state = await answer.json();
      for (const image of state.images) {
        for (const tile of document.querySelectorAll(".tile")) {
          if (tile.dataset.key !== image.key) continue;
          for (const pic of tile.querySelectorAll(".pic[data-src]")) {
            if (!image.made.includes(pic.dataset.label)) continue;
            const img = document.createElement("img");
            img.alt = pic.dataset.label + " thumbnail of " + image.key;
            img.src = pic.dataset.src;
            pic.replaceChildren(img);
            delete pic.dataset.src;
          }
        }
      }
    }
  } catch (e) {
    // A failed look is retried at the next one.
  }
  if (pending().length > 0) setTimeout(poll, 1500);
}

async function tryOne(file) {
  const tried = document.getElementById("tried");
  tried.textContent = "Making the thumbnail of " + file.name + "…";
  const form = new FormData();
  form.append("image", file, file.name);
  const answer = await fetch("/gallery/try", { method: "POST", body: form });
  if (!answer.ok) {
    tried.textContent = await answer.text();
    return;
  }
  const img = document.createElement("img");
  img.alt = "thumbnail of " + file.name;
  img.src = URL.createObjectURL(await answer.blob());
  tried.replaceChildren(img);
}

function setUpTry() {
  const panel = document.getElementById("try");
  const drop = document.getElementById("drop");
  if (!panel || !drop) return;
  const form = panel.querySelector("form");
  const input = form.querySelector("input[type=file]");
  drop.hidden = false;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.files.length > 0) tryOne(input.files[0]);
  });
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length > 0) tryOne(event.dataTransfer.files[0]);
  });
}

setUpTry();
setTimeout(poll, 1000);
