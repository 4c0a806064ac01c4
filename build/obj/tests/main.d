build/obj/tests/main.o: tests/main.cpp
