"""The human survey: a local web app that runs the study's protocol for many participants.

* :mod:`autointerp.survey.questions` — the study's six questions (texts and answer ranges).
* :mod:`autointerp.survey.features` — which features are surveyed and their images (from the run folder).
* :mod:`autointerp.survey.access` — the survey's secret, signed invitation tokens, opaque item handles.
* :mod:`autointerp.survey.db` — SQLite (WAL) storage: participants, balanced assignments, answers.
* :mod:`autointerp.survey.loader` — open a survey on a run (pinning the images' hashes).
* :mod:`autointerp.survey.app` — the FastAPI app (``create_app``) and ``serve`` (uvicorn).
* :mod:`autointerp.survey.export` — the study's CSV format plus participant, timing and check columns.
* :mod:`autointerp.survey.status` — the researcher's progress report and withdrawal.

CLI: ``autointerp survey invite|serve|status|withdraw|export`` (see docs/survey.md).
"""

from __future__ import annotations

from autointerp.runfolder import ANSWERS_SQLITE

DEFAULT_DB_NAME = ANSWERS_SQLITE
