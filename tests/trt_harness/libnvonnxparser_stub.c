/* libnvonnxparser.so.N for NVIDIA's tensorrt.so on a machine without TensorRT (swinedge's
 * test code, not NVIDIA's): the three parser entry points it imports. No parser exists
 * here, so trt.OnnxParser(...) cannot be constructed. */
#include <stdint.h>
void* createNvOnnxParser_INTERNAL(void* network, void* logger, int version) { (void)network; (void)logger; (void)version; return 0; }
void* createNvOnnxParserRefitter_INTERNAL(void* refitter, void* logger, int32_t version) { (void)refitter; (void)logger; (void)version; return 0; }
int getNvOnnxParserVersion(void) { return 0; }
