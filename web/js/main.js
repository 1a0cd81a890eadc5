// Entry point: starts each panel. No framework; each module owns one part of
// the page, and they talk only through the bus (bus.js lists every event).
import { initStatus } from './status.js';
import { initPredict } from './predict.js';
import { initModels } from './models.js';
import { initTrainForm } from './train-form.js';
import { initRuns } from './runs.js';
import { initJobs } from './jobs.js';
import { initDatasets } from './datasets.js';

initStatus();
initPredict();
initModels();
initRuns();
initTrainForm();
initJobs();
initDatasets();
document.documentElement.dataset.ready = 'true';
