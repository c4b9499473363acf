"""The MLflow pyfunc face of an hcmbench generator, as registered by `hcmbench promote`.

A module of its own because it subclasses mlflow.pyfunc.PythonModel, and MLflow is a slow import that
the rest of the package only pays for when it tracks (see tracking.py). `promote` logs this file as
"model from code" (MLflow's recommended way: nothing is pickled), hence the `set_model` call at the end.

    import mlflow
    mlflow.set_tracking_uri("sqlite:////path/to/project/mlruns/mlflow.db")   # the project's store: the registry
    model = mlflow.pyfunc.load_model("models:/hcm-dcgan@champion")
    images = model.predict({"n": 16, "seed": 0})            # float32 (16, H, W) in [0, 1]
    images = model.predict({"n": 8, "label": "ES", "sampler": "ddim", "steps": 50})
"""

from __future__ import annotations

from typing import Any

import mlflow.models
import mlflow.pyfunc


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """Samples an hcmbench checkpoint packaged as the artifact "checkpoint".

    The request (a dict, or a DataFrame whose first row is used) holds `n` and optionally `label` (a class
    name of a conditional model), `seed` and the model's sampling options (`sampler`, `steps`, ...).
    """

    def load_context(self, context: Any) -> None:
        from hcmbench.checkpoints import load_generator, resolve_device

        self.generator = load_generator(context.artifacts["checkpoint"], device=resolve_device("auto"))

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would read them as a schema
        from hcmbench.intensity import to_unit_range
        from hcmbench.sampling import draw

        request = dict(params or {})
        if hasattr(model_input, "iloc"):  # a DataFrame
            request.update({k: v for k, v in model_input.iloc[0].to_dict().items() if v is not None and v == v})
        elif isinstance(model_input, dict):
            request.update(model_input)
        n = int(request.pop("n", 1))
        label = request.pop("label", None)
        seed = int(request.pop("seed", 0))
        options = {k: int(v) if k == "steps" else v for k, v in request.items()}
        images, _ = draw(self.generator, n, label, seed, options=options)
        return to_unit_range(images[:, 0]).numpy()


mlflow.models.set_model(GeneratorModel())
