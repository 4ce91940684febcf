"""Schedules against their optimum (issue 16): the exactly optimal N-step sigma grid of a solver on an exact target
(`optimum`), the ground truth every published schedule is scored against."""
