// C edge: the OpenBLAS CBLAS interface (Debian libopenblas-dev; include path from pkg-config).
#include <cblas.h>
