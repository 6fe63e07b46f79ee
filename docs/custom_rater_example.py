import numpy as np

from autointerp.rating import Rater, register_rater


def brightness(images: list[np.ndarray]) -> float:
    """Pure scoring function: mean brightness of a set of uint8 images, in [0, 1]."""
    return float(np.mean([img.mean() / 255.0 for img in images])) if images else float("nan")


@register_rater
class Brightness(Rater):
    name = "brightness"
    description = "toy rater: how bright the top dataset examples are"
    needs = frozenset({"examples"})
    components = ("q4",)
    defaults = {"which": "top"}

    def score(self, ctx, features):
        q4 = [brightness(ctx.example_images(f, self.options["which"])) for f in features]
        return self.table(features, I=q4, components={"q4": q4})
