"""The report: Markdown and HTML pages of measured orders, figures and findings, rebuilt from a results store.

    tables       num, cell, table, slug: the Markdown building blocks every section uses
    figures      convergence_figure (error vs NFE, one panel per solver family), samples_figure
    page         Report and Section (index.md + index.html), markdown_to_html, verdict_span
    meta_keys    the store's meta keys of a theory run's record and stored sections (no imports)
    records      case_record, record_run, load_results, environment: a theory run kept in the store and read back
    order_tables order_matrix, order_table, case_table, slope_table, findings
    theory       theory_report (the theory page), full_sampler_markdown
    real         real_sections: one section per recorded real-model run
    assemble     write_report(store, results, out, run): the whole report; extra_sections

It sits beside `studies` and `conformance` above the harness: it reads the harness, the SDM study and the real-model
harness, and nothing below imports it. Public names resolve lazily, so `sdm_verify.report.meta_keys` is light.
"""

from __future__ import annotations

from importlib import import_module

#: public name -> module of this package
_PUBLIC = {
    "Report": "page", "Section": "page", "markdown_to_html": "page", "verdict_span": "page",
    "num": "tables", "cell": "tables", "table": "tables", "slug": "tables",
    "convergence_figure": "figures", "samples_figure": "figures",
    "case_record": "records", "record_run": "records", "load_results": "records", "environment": "records",
    "order_matrix": "order_tables", "order_table": "order_tables", "case_table": "order_tables",
    "findings": "order_tables",
    "theory_report": "theory", "full_sampler_markdown": "theory",
    "real_sections": "real",
    "write_report": "assemble", "extra_sections": "assemble",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    try:
        module = _PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module 'sdm_verify.report' has no attribute {name!r}") from None
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
