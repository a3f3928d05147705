#!/usr/bin/env bash
# bucketfn as IBM Code Engine jobs: seed 001's thumbnail job and seed 004's forward job, each
# started by a COS subscription for one object, and each function's sweep as an array job that
# a cron subscription starts, split by key hash across its instances. Code Engine has no file
# of job definitions to apply, so this is the CLI calls that make them, in the project
# selected (`ibmcloud ce project select --name bucketfn`), with the ConfigMaps and Secret of
# docs/deploy.md ("IBM Code Engine"). Run it once; `job update` / `subscription ... update` change
# what it made.
#
#   REGISTRY=icr.io/my-namespace TAG=0.1.0 REGISTRY_SECRET=icr-pull \
#   PHOTOS_BUCKET=photos LOGS_BUCKET=flow-logs deploy/code-engine/jobs.sh
#
# What each instance reads, set by Code Engine and never here:
#   JOB_INDEX       which instance of the array it is, from 0;
#   JOB_ARRAY_SIZE  how many instances share the sweep (--array-size). `job` sweeps only the
#                   keys that hash to JOB_INDEX, with a cursor of its own
#                   (<cursor>.shard-<i>-of-<n>.json), so each instance resumes on its own.
#                   An array of one is no split: its cursor is the unsplit sweep's;
#   CE_TYPE, CE_ID, CE_SOURCE, CE_SPECVERSION, CE_TIME, CE_DATA, CONTENT_TYPE
#                   the event of a subscription, which `job` decodes as the CloudEvent it is
#                   (a COS write: that object; a cron ping: the sweep).
# `job` exits 0 when its work is done or stopped cleanly by --budget (the summary says where
# the next run continues), 1 when objects failed (listed in the summary and the cursor, tried
# again on later passes) or the store failed, 2 when the configuration or the event is
# rejected.
set -euo pipefail

: "${REGISTRY:?the registry the images were pushed to, e.g. icr.io/my-namespace}"
: "${TAG:?the image tag}"
: "${REGISTRY_SECRET:?the Code Engine registry secret that pulls from it}"
: "${PHOTOS_BUCKET:?the bucket whose photos get thumbnails}"
: "${LOGS_BUCKET:?the bucket whose log objects are forwarded}"

# Instances of each sweep. Keep it constant: another size is another split, whose workers
# start over with cursors of their own. To rerun some instances of a run, keep the size with
# `ibmcloud ce jobrun resubmit --jobrun RUN --array-indices 3 --array-size-var-override 4`:
# without it JOB_ARRAY_SIZE becomes the number of indexes chosen, and `job` refuses an index
# that is not below it.
WORKERS=4

# --- thumbnail-on-create (seed 001) ----------------------------------------------------------

# One object per run: what the COS subscription starts for each write (a run of one
# instance: an array would start every instance for the event, and all but the key's worker
# would exit at once). --budget ends the work before the maximum execution time, so that an
# image still in progress fails as retryable (exit 1) and is run again (--retrylimit) rather
# than killed. An application (docs/deploy.md) serves steady uploads at less cost; a job suits
# uploads whose work outlasts an application's request timeout.
ibmcloud ce job create --name thumbnail-event --image "$REGISTRY/thumbnail-on-create:$TAG" \
  --registry-secret "$REGISTRY_SECRET" --mode task --array-size 1 \
  --maxexecutiontime 600 --retrylimit 3 --cpu 1 --memory 2G \
  --argument job --argument --budget --argument 540 \
  --env BATCH_CONCURRENCY=1 --env MAX_SOURCE_PIXELS=60000000 \
  --env-from-configmap thumbnail-on-create --env-from-secret bucketfn-storage
ibmcloud ce subscription cos create --name photos-write-job --destination-type job \
  --destination thumbnail-event --bucket "$PHOTOS_BUCKET" --event-type write

# The sweep: WORKERS instances, each two images at a time (the memory holds two of the
# largest decodes, as on Knative). A cron subscription starts a run nightly; each instance
# stops 5 minutes before the hour it may take and continues from its cursor the next night.
# One retry gets past a store that was briefly unavailable (exit 1); more would only list the
# same failing objects again.
ibmcloud ce job create --name thumbnail-sweep --image "$REGISTRY/thumbnail-on-create:$TAG" \
  --registry-secret "$REGISTRY_SECRET" --mode task --array-size "$WORKERS" \
  --maxexecutiontime 3600 --retrylimit 1 --cpu 1 --memory 2G \
  --argument job --argument --budget --argument 3300 \
  --env SWEEP_CONCURRENCY=2 --env MAX_SOURCE_BYTES=67108864 \
  --env MAX_SOURCE_PIXELS=60000000 --env MAX_DECODE_BYTES=671088640 \
  --env-from-configmap thumbnail-on-create --env-from-secret bucketfn-storage
ibmcloud ce subscription cron create --name thumbnail-sweep-nightly --destination-type job \
  --destination thumbnail-sweep --schedule '17 2 * * *' \
  --content-type application/json --data '{}'
# A backfill now, outside the schedule (same size, so the same cursors):
#   ibmcloud ce jobrun submit --job thumbnail-sweep --array-size "$WORKERS"

# --- forward-to-stream (seed 004) ------------------------------------------------------------

# Each written log object, forwarded by a run of its own. An object still being forwarded at
# the end of --budget fails as retryable (exit 1), and Code Engine runs it again
# (--retrylimit); the hourly catch-up below forwards what is still missing after that.
ibmcloud ce job create --name forward-event --image "$REGISTRY/forward-to-stream:$TAG" \
  --registry-secret "$REGISTRY_SECRET" --mode task --array-size 1 \
  --maxexecutiontime 900 --retrylimit 3 --cpu 0.5 --memory 1G \
  --argument job --argument --budget --argument 840 --env MAX_DECODE_BYTES=268435456 \
  --env-from-configmap forward-to-stream --env-from-secret bucketfn-storage \
  --env-from-secret forward-to-stream-credentials
ibmcloud ce subscription cos create --name logs-write-job --destination-type job \
  --destination forward-event --bucket "$LOGS_BUCKET" --event-type write

# The catch-up: WORKERS instances, each with a checkpoint (and lease) of its own, every hour;
# the sizes are the Knative Service's (deploy/knative/forward-to-stream.yaml).
ibmcloud ce job create --name forward-catch-up --image "$REGISTRY/forward-to-stream:$TAG" \
  --registry-secret "$REGISTRY_SECRET" --mode task --array-size "$WORKERS" \
  --maxexecutiontime 1800 --retrylimit 1 --cpu 0.5 --memory 1G \
  --argument job --argument --budget --argument 1680 \
  --env SWEEP_CONCURRENCY=4 --env MAX_DECODE_BYTES=268435456 \
  --env-from-configmap forward-to-stream --env-from-secret bucketfn-storage \
  --env-from-secret forward-to-stream-credentials
ibmcloud ce subscription cron create --name forward-catch-up-hourly --destination-type job \
  --destination forward-catch-up --schedule '41 * * * *' \
  --content-type application/json --data '{}'
