// Progressive enhancement only: the pages work without JavaScript. Marks the body as the NHS.UK frontend expects,
// then starts its components (skip link focus, error summary focus, header menu).
import { initAll } from "./nhsuk/nhsuk-frontend.min.js";

document.body.classList.add("js-enabled", "nhsuk-frontend-supported");
initAll();
