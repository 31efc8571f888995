"""Figures for the notebooks, one module per theme (data, training, evaluation).

Every function returns a matplotlib Figure; saving goes through ``Session.save_fig`` (or
``bclib.run.reports.save_fig``) so learners see exactly the figures the report holds.
"""
