// C edge: the protobuf-c runtime (Debian libprotobuf-c-dev; flags from pkg-config libprotobuf-c).
// Only Sources/CONNXProto's generated code and DicoONNX use it.
#include <protobuf-c/protobuf-c.h>
