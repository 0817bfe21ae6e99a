// C edge: zlib's crc32 (Debian zlib1g-dev), the checksum of the .dico format.
#include <zlib.h>
