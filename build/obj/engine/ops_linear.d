build/obj/engine/ops_linear.o: engine/ops_linear.cpp engine/blas.h \
 engine/ops.h engine/autograd.h engine/tensor.h engine/memory.h \
 engine/rng.h engine/shape.h engine/check.h
engine/blas.h:
engine/ops.h:
engine/autograd.h:
engine/tensor.h:
engine/memory.h:
engine/rng.h:
engine/shape.h:
engine/check.h:
