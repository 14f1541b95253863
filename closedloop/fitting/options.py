"""Names the fit command offers, in a module light enough to import when the CLI starts."""

EXECUTORS = ("local", "ray")
SAMPLERS = ("random", "tpe")
PRUNERS = ("none", "median", "asha")
