"""The keys under which `sdm-verify theory` keeps, in the results store's meta, what the report shows beside the rows.

Light on purpose (no imports): the command line reads these names without loading the harness.
"""

RUN_META = "theory_run"  # the last `sdm-verify theory` run: its cases, wall time, environment (records.record_run)
SYMBOLIC_META = "symbolic_orders"  # solver name -> SymbolicOrder.to_dict() or None
FULL_META = "full_sampler_section"  # Markdown of the full-sampler section (theory.full_sampler_markdown)
SDM_META = "sdm_section"  # Markdown of the SDM study's section (studies.sdm.report.sdm_section)
SDM_DATA_META = "sdm_figure_data"  # the numbers behind the SDM figures (studies.sdm.report.sdm_figures)

#: sections stored as Markdown by `theory`, shown by `theory` and `report`: (meta key, title)
EXTRA_SECTIONS = ((FULL_META, "The full sampler: the final step into sigma = 0"),
                  (SDM_META, "SDM: the paper's claims and the Wasserstein bound on exact targets"))
