"""The whole report of a results store: the theory page, the sections `sdm-verify theory` stored beside the rows
(meta_keys.EXTRA_SECTIONS: the full sampler, the SDM study with its figures), then one section per recorded real-model
run. Nothing is recomputed: orders are refitted from stored errors, figures redrawn from stored numbers.
"""

from __future__ import annotations

from ..harness.results import CaseResult
from ..harness.store import ResultStore
from ..studies.sdm.report import sdm_figures
from .meta_keys import EXTRA_SECTIONS, SDM_DATA_META, SDM_META
from .page import Report
from .real import real_sections
from .theory import theory_report


def extra_sections(store: ResultStore) -> list[tuple[str, str, list]]:
    """(title, markdown, figures) of the stored extra sections; the SDM figures are drawn from stored numbers."""
    figures = {SDM_META: sdm_figures(store.get_meta(SDM_DATA_META) or {})}
    return [(title, store.get_meta(key), figures.get(key, [])) for key, title in EXTRA_SECTIONS if store.get_meta(key)]


def write_report(store: ResultStore | None, results: list[CaseResult], out, run: dict | None, extra=None):
    """Write out/index.md and out/index.html: the theory report of `results` (`run`: its record, records.load_results)
    with the extra sections (`extra`, default: those stored in `store`), then the real-model sections of every run of
    `sdm-verify real` recorded in `store`. Without a store, only `results` and `extra`. Returns both paths."""
    if extra is None:
        extra = extra_sections(store) if store is not None else []
    rep = theory_report(results, out, run) if results else Report(
        "sdm-verify: real models", "No theory run in this store: `sdm-verify theory --db ...` adds the exact-target "
        "results the real-model orders are compared with.")
    for title, md, figures in extra:
        rep.add_section(title, md, figures)
    if store is not None:
        for title, md, figures in real_sections(store, results, out):
            rep.add_section(title, md, figures)
    return rep.write(out)
