// How the page's modules talk: only through this bus, never by importing each
// other or sharing mutable objects. A module announces what happened (facts)
// or asks for something (requests); whoever owns that part of the page acts.
// Every event, with its owner and detail:
//
// facts
//   'status'        status.js: a frozen snapshot {state: 'ready'|'no-model'|
//                   'down'|'unknown', detail, activeId, activeModel, models,
//                   training, fraction}, after every check
//   'models'        status.js: the model list (array) after each refresh
//   'models-error'  status.js: an ApiError when the list could not be read
//   'model-changed' status.js: the newly active model (object or null)
//   'ready'         status.js: true when a model became usable, false when lost
//   'prediction'    predict.js: {label, empty} of each answer shown
//   'job-updated'   jobs.js, runs.js: a job object fresher than before
//   'job-ended'     runs.js: the `end` event of a watched job
//   'datasets'      datasets.js: the data set list (array) after each refresh
//   'live'          live.js: {connected} when the daemon-wide stream opens or drops
//   'daemon'        live.js: {replica, primary, model} from each `hello`
// requests
//   'resync'          (live.js) → every panel re-reads what it shows: events
//                       may have been missed (the daemon restarted)
//   'refresh-models'  → status.js re-reads the models (and readiness)
//   'check-status'    → status.js re-checks readiness now
//   'refresh-jobs'    → jobs.js re-reads the job list
//   'refresh-datasets' → datasets.js re-reads the data sets (answers 'datasets')
//   'cancel-job'      → jobs.js cancels job `id` ({id}); answers 'job-updated'
//                       or, on failure, 'cancel-failed' ({id})
//   'watch-jobs'      → runs.js shows these jobs (array) in cards and charts
//   'load-sample'     → predict.js puts a test image ({dataset, index, label,
//                       pixels}) on the pad

const hub = new EventTarget();

export const emit = (type, detail) => hub.dispatchEvent(new CustomEvent(type, { detail }));
export const on = (type, fn) => hub.addEventListener(type, (e) => fn(e.detail));
