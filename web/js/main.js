// Entry point: starts each panel. No framework; each module owns one part of
// the page, and they talk only through the bus (bus.js lists every event).
// The daemon-wide event stream comes first: its `hello` says whether this
// daemon is a read-only replica, which decides what the page offers.
import { startLive } from './live.js';
import { initStatus } from './status.js';
import { initPredict } from './predict.js';
import { initModels } from './models.js';
import { initTrainForm } from './train-form.js';
import { initRuns } from './runs.js';
import { initJobs } from './jobs.js';
import { initDatasets } from './datasets.js';
import { $, setText } from './util.js';

const role = await startLive();
if (role.replica) {
  // Training, uploads and model changes happen on the primary (403 here).
  document.documentElement.dataset.role = 'replica';
  $('#train').hidden = true;
  $('#upload-form').hidden = true;
  const note = $('#replica-note');
  setText(note.querySelector('.primary-url'), role.primary);
  note.hidden = false;
}
initStatus(role);
initPredict();
initModels();
if (!role.replica) {
  initRuns();
  initTrainForm();
  initJobs(role);
}
initDatasets();
document.documentElement.dataset.ready = 'true';
