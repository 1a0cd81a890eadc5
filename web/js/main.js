// Entry point: wires the panels together. No framework; each module owns one
// part of the page and they talk through the small event hub in util.js.
import { initStatus } from './status.js';
import { initPredict } from './predict.js';
import { initTrain } from './train.js';
import { initModels } from './models.js';

initStatus();
initPredict();
initModels();
initTrain();
document.documentElement.dataset.ready = 'true';
