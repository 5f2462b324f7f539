"""A table resolved into named units: :func:`resolve` turns a variant and its build
options into a :class:`Plan` whose unit names are the canonical checkpoint prefixes
(torchvision's state_dict names), with every layer's input channels filled in. Every
framework builds the same tree from it, and the checkpoint keys follow from it."""

from __future__ import annotations

import dataclasses
import math

from .rows import (
    Conv,
    Inception,
    InceptionA,
    Residual,
    Row,
    Variant,
)
from .shapes import trace
from .tables import VARIANTS
from .units import (
    MAX_CLASSES,
    ConvUnit,
    Dense,
    InceptionAuxUnit,
    InceptionUnit,
    Options,
    Plan,
    ResidualUnit,
    SpecError,
    Stage,
)

# --------------------------------------------------------------------------------------
# resolve(): table -> plan
# --------------------------------------------------------------------------------------


def variant(name: str | Variant) -> Variant:
    """The variant of that name (or the variant itself), or a SpecError listing the names."""
    if isinstance(name, Variant):
        return name
    if name not in VARIANTS:
        raise SpecError(f"variant: unknown {name!r}; expected one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


def without_dropout(variant: Variant) -> Variant:
    """The variant with every dropout rate 0: random masks cannot agree across frameworks."""
    aux = None if variant.aux is None else dataclasses.replace(variant.aux, dropout=0.0)
    return dataclasses.replace(variant, head=dataclasses.replace(variant.head, dropout=0.0), aux=aux)


def resolve(
    name: str | Variant,
    num_classes: int | None = None,
    aux_logits: bool = False,
    transform_input: bool = False,
) -> Plan:
    """The plan of a variant built with these options, each checked and named in the error.

    ``num_classes``: None keeps the variant's own (1000; 10 or 100 for the small nets).
    ``transform_input``: only for variants that define an input transform.
    """
    v = variant(name)
    if num_classes is None:
        num_classes = v.head.classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise SpecError(f"num_classes: expected a positive integer, got {num_classes!r}")
    if num_classes > MAX_CLASSES:
        raise SpecError(f"num_classes: expected at most {MAX_CLASSES:,} classes, got {num_classes:,}")
    if transform_input and v.input.transform is None:
        raise SpecError(f"transform_input: variant {v.name!r} defines no input transform")
    if aux_logits and v.aux is None:
        raise SpecError(f"aux_logits: variant {v.name!r} has no aux heads")
    return _plan(v, Options(num_classes, bool(aux_logits), bool(transform_input)))


def with_options(plan: Plan, **changes: object) -> Plan:
    """The same variant resolved with some options changed."""
    return resolve(plan.variant, **{**plan.options.asdict(), **changes})  # type: ignore[arg-type]


def _plan(variant: Variant, options: Options) -> Plan:
    stages: list[Stage] = []
    channels: dict[str, int] = {}
    c = variant.input.channels
    for row in variant.rows:
        stage = _stage(row, c, variant)
        c = getattr(stage, "out_channels", c)
        stages.append(stage)
        channels[row.name] = c
    aux: list[InceptionAuxUnit] = []
    if options.aux_logits and variant.aux is not None:
        head = variant.aux
        for i, tap in enumerate(head.taps, start=1):
            name = f"aux{i}"
            flat = (head.conv, head.pooled, head.pooled)
            aux.append(
                InceptionAuxUnit(
                    name,
                    tap,
                    dataclasses.replace(head.pool, name=f"{name}.pool"),
                    _unit(variant, f"{name}.conv", channels[tap], head.conv, 1),
                    Dense(f"{name}.fc1", math.prod(flat), head.fc, flattened_from=flat),
                    Dense(f"{name}.fc2", head.fc, options.num_classes),
                    head.dropout,
                    head.pooled,
                )
            )
    if variant.head.pool is None:  # fc reads the whole last map, at the variant's own size
        last = trace(stages, (variant.input.channels, variant.input.size, variant.input.size))
        fc = Dense(variant.head.fc, math.prod(last), options.num_classes, flattened_from=last)
    else:
        fc = Dense(variant.head.fc, c, options.num_classes)
    transform = variant.input.transform if options.transform_input else None
    return Plan(variant, options, tuple(stages), tuple(aux), fc, variant.head.dropout, variant.head.pool, transform)


def _unit(
    variant: Variant,
    name: str,
    cin: int,
    cout: int,
    kernel: int,
    stride: int = 1,
    padding: int | None = None,
    bias: bool = True,
    relu: bool = True,
    eps: float | None = None,
) -> ConvUnit:
    """A conv unit with the variant's conv settings. It has a bias when the variant's
    convs have one and ``bias`` (the row's) does not drop it; ``padding`` None keeps the
    size (kernel // 2); ``eps`` overrides the norm's. With the variant's SAME padding
    (TensorFlow's), ``padding`` is 0 and unused."""
    norm = (
        variant.convs.norm
        if eps is None or variant.convs.norm is None
        else dataclasses.replace(variant.convs.norm, eps=eps)
    )
    padding = 0 if variant.convs.same else kernel // 2 if padding is None else padding
    bias = variant.convs.bias and bias
    return ConvUnit(name, cin, cout, kernel, stride, padding, norm, bias, relu, variant.convs.plain, variant.convs.same)


def _inception(row: Inception, cin: int, variant: Variant) -> InceptionUnit:
    n, b3 = row.name, variant.branch3
    # branch 3: 1x1, then `depth` stacked kernel x kernel convs (two 3x3 in pytorch-cifar100)
    widths = (row.ch5x5red,) + (row.ch5x5,) * b3.depth
    branch3 = [_unit(variant, f"{n}.branch3.0", cin, row.ch5x5red, 1)]
    for i in range(1, len(widths)):
        eps = float(widths[i]) if b3.width_as_eps and i == 1 else None
        branch3.append(_unit(variant, f"{n}.branch3.{i}", widths[i - 1], widths[i], b3.kernel, eps=eps))
    pool = dataclasses.replace(variant.branch_pool, name=f"{n}.branch4.0")
    return InceptionUnit(
        n,
        cin,
        (
            (_unit(variant, f"{n}.branch1", cin, row.ch1x1, 1),),
            (
                _unit(variant, f"{n}.branch2.0", cin, row.ch3x3red, 1),
                _unit(variant, f"{n}.branch2.1", row.ch3x3red, row.ch3x3, 3),
            ),
            tuple(branch3),
            (pool, _unit(variant, f"{n}.branch4.1", cin, row.pool_proj, 1)),
        ),
    )


def _inception_a(row: InceptionA, cin: int, variant: Variant) -> InceptionUnit:
    n = row.name

    def conv(attr: str, c_in: int, c_out: int, kernel: int) -> ConvUnit:
        return _unit(variant, f"{n}.{attr}", c_in, c_out, kernel, relu=False)

    return InceptionUnit(
        n,
        cin,
        (
            (conv("branch1x1", cin, row.ch1x1, 1),),
            (conv("branch5x5_1", cin, row.ch5x5red, 1), conv("branch5x5_2", row.ch5x5red, row.ch5x5, 5)),
            (
                conv("branch3x3_1", cin, row.ch3x3red, 1),
                conv("branch3x3_2", row.ch3x3red, row.ch3x3, 3),
                conv("branch3x3_3", row.ch3x3, row.ch3x3, 3),
            ),
            (dataclasses.replace(variant.branch_pool, name=f"{n}.pool"), conv("branch_pool", cin, row.pool_proj, 1)),
        ),
    )


def _stage(row: Row, channels: int, variant: Variant) -> Stage:
    if isinstance(row, Conv):
        return _unit(variant, row.name, channels, row.out, row.kernel, row.stride, row.padding, row.bias, row.relu)
    if isinstance(row, Inception):
        block = _inception(row, channels, variant)
        if block.out_channels != row.out:  # the table and the branches must agree
            raise SpecError(f"{row.name}: branches give {block.out_channels} channels, the row says {row.out}")
        return block
    if isinstance(row, InceptionA):
        return _inception_a(row, channels, variant)
    if isinstance(row, Residual):
        return ResidualUnit(
            row.name,
            _unit(variant, f"{row.name}.conv1", channels, channels, 3),
            _unit(variant, f"{row.name}.conv2", channels, channels, 3, relu=False),
        )
    return row
