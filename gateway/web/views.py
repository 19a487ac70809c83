"""The patient pages: GET / -> /trials, the search form and results (/trials), a study (/trials/<id>) and the
patient's actions on it (request contact, withdraw, alerts about similar trials).

Privacy: the search form is POSTed (with a CSRF token) and kept in the signed session cookie, then the browser is
redirected to GET /trials (post/redirect/get), so neither the postcode nor the condition words ever appear in a
URL, a Referer header or an access log line. Patient actions are POST forms for a signed-in patient only and go
through the same services and the same ``Access`` checks as the FHIR API.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from gateway.fhir.errors import FhirError, Gone, NotFound
from gateway.security.policy import Access, current_access
from gateway.security.principal import Caller
from gateway.store.repo import Store
from gateway.web import csrf, patient
from gateway.web.search import (
    DEFAULT_DISTANCE_KM,
    DISTANCES_KM,
    PostcodeNotFound,
    TrialSearch,
    describe_many,
    origin_of,
)
from gateway.web.search import run as run_search

log = logging.getLogger("gateway.web")
bp = Blueprint("web", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/web")

SESSION_SEARCH = "trial_search"
MAX_WORDS = 200
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # FHIR id syntax
# Pages load only our own files: the vendored NHS.UK frontend CSS/JS and its images.
PAGE_CSP = ("default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; font-src 'self'; "
            "manifest-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def init_app(app: Flask) -> None:
    """Register the pages; the session secret must be set (CSRF tokens and the search live in the session)."""
    csrf.init_app(app)
    app.register_blueprint(bp)


def store() -> Store:
    return current_app.extensions["gateway.store"]


# -- per request -------------------------------------------------------------------------------
@bp.before_request
def _page_caller() -> None:
    """A page acts as the signed-in patient, else as an anonymous member of the public (never as an administrator,
    even in development mode): the same ``Access`` rules as the API then decide what the page may show or do."""
    who: Caller = patient.current_caller() or Caller(client_id="anonymous", role="anonymous", authenticated=False)
    g.page_caller = who
    g.access = Access(who, store())
    current_access.set(g.access)  # the API's write hook checks the same Access; reset at teardown by the API
    if request.method == "POST":
        csrf.check()


@bp.after_request
def _page_headers(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = PAGE_CSP
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers.setdefault("Cache-Control", "no-store")
    return resp


@bp.errorhandler(FhirError)
def _fhir_error(exc: FhirError):
    """Errors on a page are pages (an HTML answer with the status), never JSON and never a stack trace."""
    status = exc.status if isinstance(exc.status, int) else HTTPStatus.BAD_REQUEST
    if isinstance(exc, NotFound | Gone):
        return render_template("web/not_found.html"), HTTPStatus.NOT_FOUND
    log.info("page refused: %s %s", int(status), type(exc).__name__)
    return render_template("web/problem.html", status=int(status), message=exc.diagnostics), status


@bp.errorhandler(csrf.CsrfFailed)
def _csrf_failed(_exc):
    return render_template("web/problem.html", status=400,
                           message="Your session has expired or the form was sent twice. Go back and try again."
                           ), HTTPStatus.BAD_REQUEST


@bp.app_context_processor
def _page_globals() -> dict:
    if request.blueprint != "web":
        return {}
    return {"csrf_token": csrf.token, "signed_in": g.get("page_caller") is not None and
            g.page_caller.role == "patient-app", "sign_in_url": patient.sign_in_url,
            "sign_out_url": patient.SIGN_OUT_URL, "sign_out_token": patient.sign_out_token}


# -- pages -------------------------------------------------------------------------------------
@bp.get("/")
def root():
    return redirect(url_for("web.trials"), HTTPStatus.FOUND)


@bp.get("/assets/images/<path:filename>")
def nhsuk_images(filename: str):
    """The NHS.UK frontend CSS names its images as /assets/images/...: served from the vendored copy."""
    return bp.send_static_file(f"nhsuk/assets/images/{filename}")


@bp.get("/trials")
def trials():
    s = TrialSearch.from_session(session.get(SESSION_SEARCH))
    if s is None:
        return render_template("web/trials.html", form=TrialSearch(), distances=DISTANCES_KM, outcome=None,
                               errors=[])
    try:
        outcome = run_search(store(), g.access, s)
    except PostcodeNotFound:  # the search service no longer knows a postcode kept in the session
        session.pop(SESSION_SEARCH, None)
        return _form_errors(s, [("postcode", "Enter a real postcode, like LS6 3HE")])
    return render_template("web/trials.html", form=s, distances=DISTANCES_KM, outcome=outcome, errors=[])


@bp.post("/trials")
def search():
    s, errors = _read_form()
    if not errors:
        try:
            origin_of(s.postcode)
        except PostcodeNotFound:
            errors.append(("postcode", "We could not find that postcode. Enter a full UK postcode, like LS6 3HE"))
    if errors:
        return _form_errors(s, errors)
    session[SESSION_SEARCH] = s.to_session()
    return redirect(url_for("web.trials") + "#results", HTTPStatus.SEE_OTHER)


@bp.post("/trials/clear")
def clear():
    session.pop(SESSION_SEARCH, None)
    return redirect(url_for("web.trials"), HTTPStatus.SEE_OTHER)


@bp.get("/trials/<sid>")
def study(sid: str):
    return _study_page(sid)


def _study_page(sid: str, *, alert_form: dict | None = None, errors: list[tuple[str, str]] | None = None):
    view = _study_view(sid)
    signed_in = g.page_caller.role == "patient-app"
    state = patient.contact_state(g.page_caller, sid) if signed_in else None
    interests = patient.alert_interests(g.page_caller) if signed_in else None
    search = TrialSearch.from_session(session.get(SESSION_SEARCH))
    form = alert_form or {"postcode": search.postcode if search else "",
                          "distance_km": search.distance_km if search else DEFAULT_DISTANCE_KM}
    page = render_template("web/study.html", study=view, search=search, contact=state, alerts=interests is not None,
                           interests=interests or [], alert_form=form, distances=DISTANCES_KM, errors=errors or [],
                           field_errors=dict(reversed(errors or [])), notice=session.pop("notice", None))
    return (page, HTTPStatus.BAD_REQUEST) if errors else page


@bp.post("/trials/<sid>/contact")
def request_contact(sid: str):
    _study_view(sid)
    patient.request_contact(patient.require_signed_in(), sid)
    session["notice"] = "contact-requested"
    return redirect(url_for("web.study", sid=sid) + "#actions", HTTPStatus.SEE_OTHER)


@bp.post("/trials/<sid>/withdraw")
def withdraw(sid: str):
    _study_view(sid)
    patient.withdraw(patient.require_signed_in(), sid)
    session["notice"] = "contact-withdrawn"
    return redirect(url_for("web.study", sid=sid) + "#actions", HTTPStatus.SEE_OTHER)


@bp.post("/trials/<sid>/alerts")
def similar_alerts(sid: str):
    """'Tell me about similar trials': the study's condition, near the postcode the patient gives (prefilled from
    the last search; empty: anywhere in the UK) within the distance chosen. The postcode goes in the POST body and
    is kept only as its district (gateway.api.patient.opt_in_alerts)."""
    view = _study_view(sid)
    caller = patient.require_signed_in()
    postcode = " ".join((request.form.get("alert_postcode") or "").upper().split())
    raw = request.form.get("alert_distance") or str(DEFAULT_DISTANCE_KM)
    distance = int(raw) if raw.isdigit() and int(raw) in DISTANCES_KM else None
    errors: list[tuple[str, str]] = []
    if distance is None:
        errors.append(("alert-distance", "Choose a distance from the list"))
    try:
        if len(postcode) > 10:
            raise PostcodeNotFound
        origin_of(postcode)
    except PostcodeNotFound:
        errors.append(("alert-postcode", "We could not find that postcode. Enter a full UK postcode, like LS6 3HE, "
                                         "or leave it empty for trials anywhere in the UK"))
    if errors:
        return _study_page(sid, alert_form={"postcode": postcode[:10], "distance_km": distance or DEFAULT_DISTANCE_KM},
                           errors=errors)
    patient.opt_in(caller, view, postcode, distance or DEFAULT_DISTANCE_KM)
    session["notice"] = "alerts-on"
    return redirect(url_for("web.study", sid=sid) + "#actions", HTTPStatus.SEE_OTHER)


@bp.post("/trials/<sid>/stop-alerts")
def opt_out(sid: str):
    _study_view(sid)
    patient.opt_out(patient.require_signed_in())
    session["notice"] = "alerts-off"
    return redirect(url_for("web.study", sid=sid) + "#actions", HTTPStatus.SEE_OTHER)


# -- helpers -----------------------------------------------------------------------------------
def _read_form() -> tuple[TrialSearch, list[tuple[str, str]]]:
    form = request.form
    words = " ".join((form.get("words") or "").split())
    postcode = " ".join((form.get("postcode") or "").upper().split())
    raw_distance = form.get("distance") or str(DEFAULT_DISTANCE_KM)
    errors: list[tuple[str, str]] = []
    distance = int(raw_distance) if raw_distance.isdigit() and int(raw_distance) in DISTANCES_KM else None
    if distance is None:
        errors.append(("distance", "Choose a distance from the list"))
    if len(words) > MAX_WORDS:
        errors.append(("words", f"Condition or keywords must be {MAX_WORDS} characters or fewer"))
    if len(postcode) > 10:
        errors.append(("postcode", "Enter a real postcode, like LS6 3HE"))
    if not words and not postcode:
        errors.append(("words", "Enter a condition or keywords, or a postcode"))
    s = TrialSearch(words[:MAX_WORDS], postcode[:10], distance or DEFAULT_DISTANCE_KM, form.get("recruiting") == "yes")
    return s, errors


def _form_errors(s: TrialSearch, errors: list[tuple[str, str]]):
    return render_template("web/trials.html", form=s, distances=DISTANCES_KM, outcome=None, errors=errors,
                           field_errors=dict(reversed(errors))), HTTPStatus.BAD_REQUEST


def _study_view(sid: str):
    """The study as the caller may see it (NotFound otherwise, also for a malformed id), with sites and distances
    from the postcode of the last search."""
    if not _ID.match(sid):
        raise NotFound("study not known", "ResearchStudy.id")
    st = store().read("ResearchStudy", sid)
    res = st.resource()
    if not g.access.can_see(res):
        raise NotFound("study not known", "ResearchStudy.id")
    s = TrialSearch.from_session(session.get(SESSION_SEARCH))
    try:
        origin = origin_of(s.postcode) if s else None
    except PostcodeNotFound:
        origin = None
    return describe_many(store(), g.access, [res], origin)[0]
