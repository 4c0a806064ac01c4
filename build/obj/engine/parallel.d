build/obj/engine/parallel.o: engine/parallel.cpp engine/parallel.h \
 engine/check.h
engine/parallel.h:
engine/check.h:
