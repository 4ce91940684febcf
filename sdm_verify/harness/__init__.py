"""The harness: embedded targets, meters, counted NFE, one measure-run, the sweep and its results store, order
fitting, symbolic orders and the theory matrix with its verdicts. It brings the oracle (`analytic`) and the systems
under test (`sdm_verify.solvers`, `sdm_verify.schedules`) together; nothing below it imports it."""
