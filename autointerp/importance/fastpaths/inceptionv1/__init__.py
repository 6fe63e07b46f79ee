"""The InceptionV1 ``mixed5a`` fast path (:mod:`.path` and its tiers), registered as ``inceptionv1_mixed5a``.

Importing this subpackage registers the path in :data:`autointerp.importance.fastpaths.FAST_PATHS`; the
tiers' modules (PyTorch, C loops, int8 products) are imported only when the path is built.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from autointerp.importance.fastpaths import FastPath, register_fast_path

if TYPE_CHECKING:  # pragma: no cover
    from autointerp.importance.engine import AblationPath
    from autointerp.models.base import ModelAdapter


class InceptionV1Options(BaseModel):
    """``importance.fast_path.options`` of the InceptionV1 ``mixed5a`` path (every tier keeps the counts exact)."""

    model_config = ConfigDict(extra="forbid")

    # torch.compile the elementwise core (eager PyTorch, with a warning, where compiling fails)
    compile: bool = True
    # int8 convolutions with sound error bounds; auto: where int8 products are exact and faster than float32 here
    int8: bool | Literal["auto"] = "auto"
    # each branch's exact change as a rank-1 part plus a sparse correction; auto: where the int8 tier is off
    sparse: bool | Literal["auto"] = "auto"
    # a rank-one fit of each branch's change with a bounded rest; auto: where int8 is off or on one thread
    lowrank: bool | Literal["auto"] = "auto"


class InceptionV1Mixed5a(FastPath):
    """Lucent's InceptionV1 at ``mixed5a`` (7×7 maps): rank-1 updates through ``mixed5b`` with sound bounds
    (:class:`~.path.InceptionMixed5aPath`)."""

    name = "inceptionv1_mixed5a"
    Options = InceptionV1Options
    worker_processes = True
    per_image_outcomes = False  # 832 features × every image: units keep per-segment sums only

    def supports(self, model: ModelAdapter, layer: str, shape: tuple[int, int, int]) -> bool:
        from autointerp.importance.fastpaths.inceptionv1.path import supports_inception_mixed5a

        return supports_inception_mixed5a(model.module, layer, tuple(shape[-2:]))

    def build(
        self, options: BaseModel, model: ModelAdapter, layer: str, shape: tuple[int, int, int]
    ) -> Callable[[], AblationPath]:
        """The int8 tier's speed check runs here, once, so every worker process decides alike."""
        from autointerp.importance.fastpaths.inceptionv1.path import InceptionMixed5aPath, inception_parts
        from autointerp.importance.fastpaths.inceptionv1.quantized import int8_matmul_is_exact, int8_matmul_is_fast

        opts = InceptionV1Options.model_validate(options.model_dump())
        fast = int8_matmul_is_exact() and int8_matmul_is_fast() if opts.int8 == "auto" else None
        return functools.partial(
            InceptionMixed5aPath, inception_parts(model.module), (shape[-2], shape[-1]), compile=opts.compile,
            int8=opts.int8, sparse=opts.sparse, lowrank=opts.lowrank, int8_fast=fast,
        )  # fmt: skip

    def describe(self) -> str:
        return "lucent's InceptionV1 at mixed5a with 224-pixel inputs (7x7 maps): rank-1 updates through mixed5b"

    def prepare_process(self) -> None:
        """Keep freed memory in the process (:mod:`.memory`): the path's large temporaries are reused."""
        from autointerp.importance.fastpaths.inceptionv1.memory import keep_freed_memory

        keep_freed_memory()


register_fast_path(InceptionV1Mixed5a())
