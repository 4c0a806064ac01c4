build/obj/tests/test_autograd.o: tests/test_autograd.cpp tests/helpers.h \
 engine/autograd.h engine/tensor.h engine/memory.h engine/rng.h \
 engine/shape.h engine/check.h engine/ops.h
tests/helpers.h:
engine/autograd.h:
engine/tensor.h:
engine/memory.h:
engine/rng.h:
engine/shape.h:
engine/check.h:
engine/ops.h:
