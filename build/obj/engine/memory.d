build/obj/engine/memory.o: engine/memory.cpp engine/memory.h \
 engine/check.h
engine/memory.h:
engine/check.h:
