"""Customer Preference Pipeline: all logic, free of Airflow imports.

Stages: ``config``, ``storage``, ``sources``, ``schema``, ``services`` (the embedded runtime), and
the stages added as the pipeline grows (validation, features, model, training, evaluation,
registry, scoring, segments).
"""

__version__ = "0.1.0"
