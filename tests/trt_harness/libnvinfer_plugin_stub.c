/* libnvinfer_plugin.so.N for NVIDIA's tensorrt.so on a machine without TensorRT (swinedge's
 * test code, not NVIDIA's): the one entry point it imports. No NVIDIA plugins exist here. */
#include <stdbool.h>
bool initLibNvInferPlugins(void* logger, const char* libNamespace) { (void)logger; (void)libNamespace; return false; }
