build/obj/engine/blas.o: engine/blas.cpp engine/blas.h engine/check.h
engine/blas.h:
engine/check.h:
