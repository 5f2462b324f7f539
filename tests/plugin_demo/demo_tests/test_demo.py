"""The plug-in's own tests: the suite's checks, from conformance.kit."""

from conformance import kit

test_conformance = kit.cases(
    "demo", variants=["googlenet_d2l"], checks=["contract", "counts", "stages", "roundtrip"], sizes=[96], batch=1
)
# 224: maxpool1 gives 56 x 56 rounding up, 55 x 55 rounding down
test_floor = kit.cases("demo-floor", variants=["googlenet"], checks=["contract", "stages"], sizes=[224], batch=1)
