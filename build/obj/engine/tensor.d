build/obj/engine/tensor.o: engine/tensor.cpp engine/tensor.h \
 engine/memory.h engine/rng.h engine/shape.h engine/check.h \
 engine/autograd.h
engine/tensor.h:
engine/memory.h:
engine/rng.h:
engine/shape.h:
engine/check.h:
engine/autograd.h:
