build/obj/engine/autograd.o: engine/autograd.cpp engine/autograd.h \
 engine/tensor.h engine/memory.h engine/rng.h engine/shape.h \
 engine/check.h
engine/autograd.h:
engine/tensor.h:
engine/memory.h:
engine/rng.h:
engine/shape.h:
engine/check.h:
