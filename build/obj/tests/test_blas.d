build/obj/tests/test_blas.o: tests/test_blas.cpp tests/helpers.h \
 engine/autograd.h engine/tensor.h engine/memory.h engine/rng.h \
 engine/shape.h engine/check.h engine/blas.h
tests/helpers.h:
engine/autograd.h:
engine/tensor.h:
engine/memory.h:
engine/rng.h:
engine/shape.h:
engine/check.h:
engine/blas.h:
