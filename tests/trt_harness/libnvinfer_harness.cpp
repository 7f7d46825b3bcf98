// What libnvinfer would give NVIDIA's compiled Python bindings (tensorrt.so), and nothing more.
//
// This file is swinedge's own test code, not NVIDIA's. It is compiled at test time into a
// shared library named libnvinfer.so.N (N = TensorRT's major version, -DTRT_MAJOR), which
// NVIDIA's unmodified tensorrt.so links against. It supplies:
//
//   * the five libnvinfer entry points tensorrt.so imports (getPluginRegistry returns the
//     registry below; the builder, runtime, refitter and builder registry entry points
//     return null: nothing here builds or runs an engine);
//   * a plugin registry that keeps the creators NVIDIA's tensorrt.plugin registers;
//   * the objects libnvinfer hands a quickly deployable plugin during a build: dimension
//     expressions and their builder, kernel launch parameters and the extra-argument list;
//   * extern "C" entry points through which tests/trt_bindings.py drives a plugin through its
//     C++ virtual functions, in the order onnx-tensorrt's parser and the builder use them.
//
// The class declarations below are written from the interfaces documented in TensorRT's
// public headers (NvInferRuntimeBase.h, NvInferPluginBase.h, NvInferRuntime.h,
// NvInferImpl.h, NvInferRuntimeCommon.h, and the Python plugin interfaces: 10.9's
// python/include/impl/plugin.h, 10.13's python/include/impl/NvInferPythonPlugin.h,
// include/impl/NvInferPythonPlugin.h from 10.16); the order of the
// virtual functions is what makes them binary-compatible with the bindings, so it follows
// those headers exactly. Where releases differ, TRT_MAJOR selects the layout.

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#ifndef TRT_MAJOR
#error "compile with -DTRT_MAJOR=10 or -DTRT_MAJOR=11"
#endif

namespace nvinfer1
{
using AsciiChar = char;
enum class DataType : int32_t;
enum class TensorFormat : int32_t;
enum class PluginFieldType : int32_t;
enum class TensorRTPhase : int32_t;
enum class PluginCapabilityType : int32_t;
enum class DimensionOperation : int32_t
{
    kSUM = 0,
    kPROD = 1,
    kMAX = 2,
    kMIN = 3,
    kSUB = 4,
    kEQUAL = 5,
    kLESS = 6,
    kFLOOR_DIV = 7,
    kCEIL_DIV = 8
};
enum class APILanguage : int32_t
{
    kCPP = 0,
    kPYTHON = 1
};
enum class PluginArgType : int32_t;
enum class PluginArgDataType : int32_t;
enum class QuickPluginCreationRequest : int32_t;

struct Dims
{
    static constexpr int32_t MAX_DIMS{8};
    int32_t nbDims;
    int64_t d[MAX_DIMS];
};

struct InterfaceInfo
{
    char const* kind;
    int32_t major;
    int32_t minor;
};

class IVersionedInterface
{
public:
    virtual APILanguage getAPILanguage() const noexcept { return APILanguage::kCPP; }
    virtual InterfaceInfo getInterfaceInfo() const noexcept = 0;
    virtual ~IVersionedInterface() noexcept = default;
};

struct PluginField
{
    AsciiChar const* name;
    void const* data;
    PluginFieldType type;
    int32_t length;
};

struct PluginFieldCollection
{
    int32_t nbFields;
    PluginField const* fields;
};

class IPluginCapability : public IVersionedInterface
{
};
class IPluginCreatorInterface : public IVersionedInterface
{
};

class IPluginV3 : public IVersionedInterface
{
public:
    virtual IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept = 0;
    virtual IPluginV3* clone() noexcept = 0;
};

class INoCopy
{
protected:
    virtual ~INoCopy() = default;
};

class IDimensionExpr;

namespace apiv
{
class VRoot
{
public:
    virtual ~VRoot() noexcept = default;
};
class VDimensionExpr : public VRoot
{
public:
    virtual bool isConstant() const = 0;
    virtual int64_t getConstantValue() const = 0;
    virtual bool isSizeTensor() const = 0;
};
class VExprBuilder : public VRoot
{
public:
    virtual IDimensionExpr const* constant(int64_t value) = 0;
    virtual IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& first, IDimensionExpr const& second) = 0;
    virtual IDimensionExpr const* declareSizeTensor(int32_t outputIndex, IDimensionExpr const& opt, IDimensionExpr const& upper) = 0;
};
} // namespace apiv

// The bindings call these through inline methods that read mImpl: the layout is
// [vtable pointer (INoCopy's virtual destructor)][mImpl].
class IDimensionExpr : public INoCopy
{
protected:
    apiv::VDimensionExpr* mImpl{nullptr};
};
class IExprBuilder : public INoCopy
{
protected:
    apiv::VExprBuilder* mImpl{nullptr};
};

struct DimsExprs
{
    int32_t nbDims;
    IDimensionExpr const* d[Dims::MAX_DIMS];
};

struct PluginTensorDesc
{
    Dims dims;
    DataType type;
    TensorFormat format;
    float scale;
};

struct DynamicPluginTensorDesc
{
    PluginTensorDesc desc;
    Dims min;
    Dims max;
    Dims opt;
};

class ISymExpr
{
public:
    virtual PluginArgType getType() const noexcept = 0;
    virtual PluginArgDataType getDataType() const noexcept = 0;
    virtual void* getExpr() noexcept = 0;
};

class ISymExprsImpl
{
public:
    virtual ISymExpr* getSymExpr(int32_t index) const noexcept = 0;
    virtual bool setSymExpr(int32_t index, ISymExpr* symExpr) noexcept = 0;
    virtual int32_t getNbSymExprs() const noexcept = 0;
    virtual bool setNbSymExprs(int32_t count) noexcept = 0;
    virtual ~ISymExprsImpl() noexcept = default;
};
class ISymExprs
{
protected:
    ISymExprsImpl* mImpl{nullptr};
    virtual ~ISymExprs() noexcept = default;
};

class IKernelLaunchParamsImpl
{
public:
    // Seven (get, set) pairs in this order: grid x/y/z, block x/y/z, shared memory.
    virtual ISymExpr* getGridX() noexcept = 0;
    virtual bool setGridX(ISymExpr*) noexcept = 0;
    virtual ISymExpr* getGridY() noexcept = 0;
    virtual bool setGridY(ISymExpr*) noexcept = 0;
    virtual ISymExpr* getGridZ() noexcept = 0;
    virtual bool setGridZ(ISymExpr*) noexcept = 0;
    virtual ISymExpr* getBlockX() noexcept = 0;
    virtual bool setBlockX(ISymExpr*) noexcept = 0;
    virtual ISymExpr* getBlockY() noexcept = 0;
    virtual bool setBlockY(ISymExpr*) noexcept = 0;
    virtual ISymExpr* getBlockZ() noexcept = 0;
    virtual bool setBlockZ(ISymExpr*) noexcept = 0;
    virtual ISymExpr* getSharedMem() noexcept = 0;
    virtual bool setSharedMem(ISymExpr*) noexcept = 0;
    virtual ~IKernelLaunchParamsImpl() noexcept = default;
};
class IKernelLaunchParams
{
protected:
    IKernelLaunchParamsImpl* mImpl{nullptr};
    virtual ~IKernelLaunchParams() noexcept = default;
};

// tensorrt.plugin's capabilities (impl/NvInferPythonPlugin.h), called, never implemented, here.
class IPluginV3QuickBuild : public IPluginCapability
{
public:
    virtual int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t const* inputRanks, int32_t nbInputs) const noexcept = 0;
    virtual int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* shapeInputs, int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept = 0;
    virtual int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept = 0;
    virtual int32_t getNbSupportedFormatCombinations(DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept = 0;
    virtual int32_t getSupportedFormatCombinations(DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs, PluginTensorDesc* supportedCombinations, int32_t nbFormatCombinations) noexcept = 0;
    virtual int32_t getNbOutputs() const noexcept = 0;
    virtual int32_t getAliasedInput(int32_t outputIndex) noexcept = 0;
    virtual int32_t getValidTactics(int32_t* tactics, int32_t nbTactics) noexcept = 0;
    virtual int32_t getNbTactics() noexcept = 0;
    virtual char const* getTimingCacheID() noexcept = 0;
    virtual char const* getMetadataString() noexcept = 0;
};
class IPluginV3QuickAOTBuild : public IPluginV3QuickBuild
{
public:
    virtual int32_t getLaunchParams(DimsExprs const* inputs, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs, IKernelLaunchParams* launchParams, ISymExprs* extraArgs, IExprBuilder& exprBuilder) noexcept = 0;
    virtual int32_t getKernel(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs, char const** kernelName, char** compiledKernel, int32_t* compiledKernelSize) noexcept = 0;
    virtual int32_t setTactic(int32_t tactic) noexcept = 0;
};
class IPluginCreatorV3Quick : public IPluginCreatorInterface
{
public:
    virtual IPluginV3* createPlugin(AsciiChar const* name, AsciiChar const* nspace, PluginFieldCollection const* fc, TensorRTPhase phase, QuickPluginCreationRequest request) noexcept = 0;
    virtual PluginFieldCollection const* getFieldNames() noexcept = 0;
    virtual AsciiChar const* getPluginName() const noexcept = 0;
    virtual AsciiChar const* getPluginVersion() const noexcept = 0;
    virtual AsciiChar const* getPluginNamespace() const noexcept = 0;
};

class IPluginCreator;  // TensorRT 10's deprecated V2 creator: only its slots matter here
class IErrorRecorder;
class IPluginResource;
using PluginLibraryHandle = void*;

// NvInferRuntimeCommon.h's IPluginRegistry. TensorRT 10 begins with three deprecated V2
// methods that 11 removed; getAllCreatorsRecursive (10.13+) is last and never called.
class IPluginRegistry
{
public:
#if TRT_MAJOR < 11
    virtual bool registerCreator(IPluginCreator& creator, AsciiChar const* const pluginNamespace) noexcept = 0;
    virtual IPluginCreator* const* getPluginCreatorList(int32_t* const numCreators) const noexcept = 0;
    virtual IPluginCreator* getPluginCreator(AsciiChar const* const pluginName, AsciiChar const* const pluginVersion, AsciiChar const* const pluginNamespace) noexcept = 0;
#endif
    virtual ~IPluginRegistry() noexcept = default;
    virtual void setErrorRecorder(IErrorRecorder* const recorder) noexcept = 0;
    virtual IErrorRecorder* getErrorRecorder() const noexcept = 0;
#if TRT_MAJOR < 11
    virtual bool deregisterCreator(IPluginCreator const& creator) noexcept = 0;
#endif
    virtual bool isParentSearchEnabled() const = 0;
    virtual void setParentSearchEnabled(bool const enabled) = 0;
    virtual PluginLibraryHandle loadLibrary(AsciiChar const* pluginPath) noexcept = 0;
    virtual void deregisterLibrary(PluginLibraryHandle handle) noexcept = 0;
    virtual bool registerCreator(IPluginCreatorInterface& creator, AsciiChar const* const pluginNamespace) noexcept = 0;
    virtual IPluginCreatorInterface* const* getAllCreators(int32_t* const numCreators) const noexcept = 0;
    virtual IPluginCreatorInterface* getCreator(AsciiChar const* const pluginName, AsciiChar const* const pluginVersion, AsciiChar const* const pluginNamespace) noexcept = 0;
    virtual bool deregisterCreator(IPluginCreatorInterface const& creator) noexcept = 0;
    virtual IPluginResource* acquirePluginResource(AsciiChar const* key, IPluginResource* resource) noexcept = 0;
    virtual int32_t releasePluginResource(AsciiChar const* key) noexcept = 0;
    virtual IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const numCreators) noexcept = 0;
};
} // namespace nvinfer1

using namespace nvinfer1;

namespace harness
{
// -- dimension expressions: constants, named symbols (profile dimensions) and operations --
struct Expr;
struct ExprNode final : apiv::VDimensionExpr
{
    Expr const* owner{nullptr};
    int kind{0};  // 0 constant, 1 symbol, 2 operation
    int64_t value{0};
    int symbol{-1};
    DimensionOperation op{DimensionOperation::kSUM};
    Expr const* a{nullptr};
    Expr const* b{nullptr};
    bool isConstant() const override { return kind == 0; }
    int64_t getConstantValue() const override { return kind == 0 ? value : -1; }
    bool isSizeTensor() const override { return false; }
};
struct Expr final : IDimensionExpr
{
    ExprNode node;
    Expr() { node.owner = this; mImpl = &node; }
    ~Expr() override = default;
};

std::deque<Expr> gExprs;  // stable addresses; lives for the process

Expr const* newConstant(int64_t v)
{
    gExprs.emplace_back();
    gExprs.back().node.kind = 0;
    gExprs.back().node.value = v;
    return &gExprs.back();
}

int64_t apply(DimensionOperation op, int64_t x, int64_t y, bool* ok)
{
    switch (op)
    {
    case DimensionOperation::kSUM: return x + y;
    case DimensionOperation::kPROD: return x * y;
    case DimensionOperation::kMAX: return x > y ? x : y;
    case DimensionOperation::kMIN: return x < y ? x : y;
    case DimensionOperation::kSUB: return x - y;
    case DimensionOperation::kEQUAL: return x == y;
    case DimensionOperation::kLESS: return x < y;
    case DimensionOperation::kFLOOR_DIV:
    {
        if (y == 0) { *ok = false; return 0; }
        int64_t q = x / y;
        if (x % y != 0 && ((x < 0) != (y < 0))) --q;  // round toward negative infinity
        return q;
    }
    case DimensionOperation::kCEIL_DIV:
        if (y <= 0 || x < 0) { *ok = false; return 0; }
        return (x + y - 1) / y;
    }
    *ok = false;
    return 0;
}

int64_t evaluate(Expr const* e, int64_t const* env, int32_t nEnv, bool* ok)
{
    ExprNode const& n = e->node;
    if (n.kind == 0) return n.value;
    if (n.kind == 1)
    {
        if (n.symbol < 0 || n.symbol >= nEnv) { *ok = false; return 0; }
        return env[n.symbol];
    }
    return apply(n.op, evaluate(n.a, env, nEnv, ok), evaluate(n.b, env, nEnv, ok), ok);
}

struct ExprBuilderImpl final : apiv::VExprBuilder
{
    IDimensionExpr const* constant(int64_t value) override { return newConstant(value); }
    IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& first, IDimensionExpr const& second) override
    {
        auto const* x = static_cast<Expr const*>(&first);
        auto const* y = static_cast<Expr const*>(&second);
        if (x->node.kind == 0 && y->node.kind == 0)
        {
            bool ok = true;
            int64_t v = apply(op, x->node.value, y->node.value, &ok);
            if (ok) return newConstant(v);  // TensorRT folds constant operations too
        }
        gExprs.emplace_back();
        ExprNode& n = gExprs.back().node;
        n.kind = 2;
        n.op = op;
        n.a = x;
        n.b = y;
        return &gExprs.back();
    }
    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
    {
        return nullptr;  // swinedge's plugin declares no size tensors
    }
};
struct ExprBuilder final : IExprBuilder
{
    ExprBuilderImpl impl;
    ExprBuilder() { mImpl = &impl; }
    ~ExprBuilder() override = default;
};
ExprBuilder gBuilder;

// -- launch parameters and extra arguments: the plugin sets ISymExpr objects made in
// Python (NVIDIA binds them nodelete, so they are never freed); their values are read
// when they are set all the same, so nothing here depends on how long they live.
struct SymValue
{
    int32_t set{0};
    int32_t type{-1};
    int32_t dataType{-1};
    Expr const* expr{nullptr};
    ISymExpr* raw{nullptr};
};

SymValue capture(ISymExpr* s)
{
    SymValue v;
    v.set = 1;
    v.raw = s;
    if (s != nullptr)
    {
        v.type = static_cast<int32_t>(s->getType());
        v.dataType = static_cast<int32_t>(s->getDataType());
        v.expr = static_cast<Expr const*>(s->getExpr());
    }
    return v;
}

struct LaunchImpl final : IKernelLaunchParamsImpl
{
    SymValue slot[7];
    ISymExpr* getGridX() noexcept override { return slot[0].raw; }
    bool setGridX(ISymExpr* s) noexcept override { slot[0] = capture(s); return true; }
    ISymExpr* getGridY() noexcept override { return slot[1].raw; }
    bool setGridY(ISymExpr* s) noexcept override { slot[1] = capture(s); return true; }
    ISymExpr* getGridZ() noexcept override { return slot[2].raw; }
    bool setGridZ(ISymExpr* s) noexcept override { slot[2] = capture(s); return true; }
    ISymExpr* getBlockX() noexcept override { return slot[3].raw; }
    bool setBlockX(ISymExpr* s) noexcept override { slot[3] = capture(s); return true; }
    ISymExpr* getBlockY() noexcept override { return slot[4].raw; }
    bool setBlockY(ISymExpr* s) noexcept override { slot[4] = capture(s); return true; }
    ISymExpr* getBlockZ() noexcept override { return slot[5].raw; }
    bool setBlockZ(ISymExpr* s) noexcept override { slot[5] = capture(s); return true; }
    ISymExpr* getSharedMem() noexcept override { return slot[6].raw; }
    bool setSharedMem(ISymExpr* s) noexcept override { slot[6] = capture(s); return true; }
};
struct Launch final : IKernelLaunchParams
{
    LaunchImpl impl;
    Launch() { mImpl = &impl; }
    ~Launch() override = default;
};

constexpr int32_t kMaxExtra = 16;
struct SymExprsImpl final : ISymExprsImpl
{
    int32_t count{0};
    SymValue value[kMaxExtra];
    ISymExpr* getSymExpr(int32_t i) const noexcept override { return (i >= 0 && i < count) ? value[i].raw : nullptr; }
    bool setSymExpr(int32_t i, ISymExpr* s) noexcept override
    {
        if (i < 0 || i >= count) return false;
        value[i] = capture(s);
        return true;
    }
    int32_t getNbSymExprs() const noexcept override { return count; }
    bool setNbSymExprs(int32_t n) noexcept override
    {
        if (n < 0 || n > kMaxExtra) return false;
        count = n;
        for (int32_t i = 0; i < kMaxExtra; ++i) value[i] = SymValue{};
        return true;
    }
};
struct SymExprs final : ISymExprs
{
    SymExprsImpl impl;
    SymExprs() { mImpl = &impl; }
    ~SymExprs() override = default;
};

// -- the plugin registry ------------------------------------------------------------------
struct Registry final : IPluginRegistry
{
    std::vector<IPluginCreatorInterface*> creators;
    std::vector<std::string> namespaces;
#if TRT_MAJOR < 11
    bool registerCreator(IPluginCreator&, AsciiChar const* const) noexcept override { return false; }
    IPluginCreator* const* getPluginCreatorList(int32_t* const n) const noexcept override { if (n) *n = 0; return nullptr; }
    IPluginCreator* getPluginCreator(AsciiChar const* const, AsciiChar const* const, AsciiChar const* const) noexcept override { return nullptr; }
    bool deregisterCreator(IPluginCreator const&) noexcept override { return false; }
#endif
    void setErrorRecorder(IErrorRecorder* const) noexcept override {}
    IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
    bool isParentSearchEnabled() const override { return false; }
    void setParentSearchEnabled(bool const) override {}
    PluginLibraryHandle loadLibrary(AsciiChar const*) noexcept override { return nullptr; }
    void deregisterLibrary(PluginLibraryHandle) noexcept override {}
    bool registerCreator(IPluginCreatorInterface& creator, AsciiChar const* const ns) noexcept override
    {
        creators.push_back(&creator);
        namespaces.emplace_back(ns ? ns : "");
        return true;
    }
    IPluginCreatorInterface* const* getAllCreators(int32_t* const n) const noexcept override
    {
        if (n) *n = static_cast<int32_t>(creators.size());
        return creators.data();
    }
    IPluginCreatorInterface* getCreator(AsciiChar const* const name, AsciiChar const* const version, AsciiChar const* const ns) noexcept override
    {
        std::string wantNs = ns ? ns : "";
        for (size_t i = creators.size(); i-- > 0;)  // the latest registration wins
        {
            if (std::strcmp(creators[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3QUICK") != 0) continue;
            auto* c = static_cast<IPluginCreatorV3Quick*>(creators[i]);
            char const* n = c->getPluginName();
            char const* v = c->getPluginVersion();
            if (n && v && std::strcmp(n, name) == 0 && std::strcmp(v, version) == 0 && namespaces[i] == wantNs) return creators[i];
        }
        return nullptr;
    }
    bool deregisterCreator(IPluginCreatorInterface const&) noexcept override { return false; }
    IPluginResource* acquirePluginResource(AsciiChar const*, IPluginResource*) noexcept override { return nullptr; }
    int32_t releasePluginResource(AsciiChar const*) noexcept override { return -1; }
    IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const n) noexcept override { return getAllCreators(n); }
};
Registry gRegistry;

// A tensor as the test describes it: type, format, and the profile's dimensions.
struct TensorSpec
{
    int32_t type;
    int32_t format;
    int32_t nbDims;
    int64_t desc[8];  // desc.dims: -1 where dynamic (build time), concrete at getKernel
    int64_t lo[8];
    int64_t opt[8];
    int64_t hi[8];
};

Dims toDims(int32_t n, int64_t const* d)
{
    Dims out{};
    out.nbDims = n;
    for (int32_t i = 0; i < n && i < Dims::MAX_DIMS; ++i) out.d[i] = d[i];
    return out;
}

std::vector<DynamicPluginTensorDesc> dynamicDescs(int32_t n, TensorSpec const* specs)
{
    std::vector<DynamicPluginTensorDesc> out(n);
    for (int32_t i = 0; i < n; ++i)
    {
        out[i].desc.dims = toDims(specs[i].nbDims, specs[i].desc);
        out[i].desc.type = static_cast<DataType>(specs[i].type);
        out[i].desc.format = static_cast<TensorFormat>(specs[i].format);
        out[i].desc.scale = 1.0f;
        out[i].min = toDims(specs[i].nbDims, specs[i].lo);
        out[i].opt = toDims(specs[i].nbDims, specs[i].opt);
        out[i].max = toDims(specs[i].nbDims, specs[i].hi);
    }
    return out;
}

std::vector<DimsExprs> exprs(int32_t n, int32_t const* nbDims, void* const* flat)
{
    std::vector<DimsExprs> out(n);
    for (int32_t i = 0; i < n; ++i)
    {
        out[i].nbDims = nbDims[i];
        for (int32_t k = 0; k < Dims::MAX_DIMS; ++k)
            out[i].d[k] = k < nbDims[i] ? static_cast<IDimensionExpr const*>(flat[i * Dims::MAX_DIMS + k]) : nullptr;
    }
    return out;
}

void export_value(SymValue const& v, void** expr, int32_t* type, int32_t* dataType)
{
    *expr = const_cast<Expr*>(v.expr);
    *type = v.set ? v.type : -2;
    *dataType = v.set ? v.dataType : -2;
}
} // namespace harness

using namespace harness;

// -- the nine entry points NVIDIA's tensorrt.so imports (five here, four in the other stubs) --
extern "C" void* createInferBuilder_INTERNAL(void*, int32_t) noexcept { return nullptr; }
extern "C" void* createInferRuntime_INTERNAL(void*, int32_t) noexcept { return nullptr; }
extern "C" void* createInferRefitter_INTERNAL(void*, void*, int32_t) noexcept { return nullptr; }
extern "C" IPluginRegistry* getPluginRegistry() noexcept { return &gRegistry; }
extern "C" IPluginRegistry* getBuilderPluginRegistry(int32_t) noexcept { return nullptr; }

// -- the driver: what tests/trt_bindings.py calls through ctypes --------------------------------
extern "C" {

int32_t harness_trt_major() { return TRT_MAJOR; }

int32_t harness_registered_creators() { return static_cast<int32_t>(gRegistry.creators.size()); }

void* harness_find_creator(char const* name, char const* version, char const* ns)
{
    return gRegistry.getCreator(name, version, ns);
}

char const* harness_interface_kind(void* versioned) { return static_cast<IVersionedInterface*>(versioned)->getInterfaceInfo().kind; }

int32_t harness_api_language(void* versioned) { return static_cast<int32_t>(static_cast<IVersionedInterface*>(versioned)->getAPILanguage()); }

// The creator's field names and types (onnx-tensorrt's loadFields walks them in this order).
int32_t harness_field_names(void* creator, char const** names, int32_t* types, int32_t capacity)
{
    PluginFieldCollection const* fc = static_cast<IPluginCreatorV3Quick*>(static_cast<IPluginCreatorInterface*>(creator))->getFieldNames();
    if (fc == nullptr) return -1;
    for (int32_t i = 0; i < fc->nbFields && i < capacity; ++i)
    {
        names[i] = fc->fields[i].name;
        types[i] = static_cast<int32_t>(fc->fields[i].type);
    }
    return fc->nbFields;
}

void* harness_create_plugin(void* creator, char const* name, char const* ns, int32_t nbFields, char const* const* fieldNames, void const* const* data,
    int32_t const* types, int32_t const* lengths, int32_t phase, int32_t request)
{
    std::vector<PluginField> fields(nbFields);
    for (int32_t i = 0; i < nbFields; ++i)
        fields[i] = PluginField{fieldNames[i], data[i], static_cast<PluginFieldType>(types[i]), lengths[i]};
    PluginFieldCollection fc{nbFields, fields.data()};
    auto* c = static_cast<IPluginCreatorV3Quick*>(static_cast<IPluginCreatorInterface*>(creator));
    return c->createPlugin(name, ns, &fc, static_cast<TensorRTPhase>(phase), static_cast<QuickPluginCreationRequest>(request));
}

void* harness_capability(void* plugin, int32_t type)
{
    return static_cast<IPluginV3*>(plugin)->getCapabilityInterface(static_cast<PluginCapabilityType>(type));
}

void* harness_clone(void* plugin) { return static_cast<IPluginV3*>(plugin)->clone(); }

int32_t harness_num_outputs(void* build) { return static_cast<IPluginV3QuickBuild*>(build)->getNbOutputs(); }

int32_t harness_aliased_input(void* build, int32_t output) { return static_cast<IPluginV3QuickBuild*>(build)->getAliasedInput(output); }

int32_t harness_output_types(void* build, int32_t nbInputs, int32_t const* inputTypes, int32_t const* ranks, int32_t nbOutputs, int32_t* outputTypes)
{
    std::vector<DataType> in(nbInputs), out(nbOutputs);
    for (int32_t i = 0; i < nbInputs; ++i) in[i] = static_cast<DataType>(inputTypes[i]);
    int32_t rc = static_cast<IPluginV3QuickBuild*>(build)->getOutputDataTypes(out.data(), nbOutputs, in.data(), ranks, nbInputs);
    for (int32_t i = 0; i < nbOutputs; ++i) outputTypes[i] = static_cast<int32_t>(out[i]);
    return rc;
}

void* harness_constant(int64_t value) { return const_cast<Expr*>(newConstant(value)); }

void* harness_symbol(int32_t index)
{
    gExprs.emplace_back();
    gExprs.back().node.kind = 1;
    gExprs.back().node.symbol = index;
    return &gExprs.back();
}

// The value of an expression with symbol i = env[i]; *ok = 0 when it cannot be evaluated.
int64_t harness_evaluate(void* expr, int64_t const* env, int32_t nEnv, int32_t* ok)
{
    if (expr == nullptr) { *ok = 0; return 0; }
    bool good = true;
    int64_t v = evaluate(static_cast<Expr const*>(expr), env, nEnv, &good);
    *ok = good ? 1 : 0;
    return v;
}

int32_t harness_is_constant(void* expr) { return static_cast<Expr const*>(expr)->node.kind == 0; }

int32_t harness_output_shapes(void* build, int32_t nbInputs, int32_t const* nbDims, void* const* inputExprs, int32_t nbOutputs, int32_t* outNbDims, void** outExprs)
{
    std::vector<DimsExprs> in = exprs(nbInputs, nbDims, inputExprs);
    std::vector<DimsExprs> out(nbOutputs);
    int32_t rc = static_cast<IPluginV3QuickBuild*>(build)->getOutputShapes(in.data(), nbInputs, nullptr, 0, out.data(), nbOutputs, gBuilder);
    for (int32_t i = 0; i < nbOutputs; ++i)
    {
        outNbDims[i] = out[i].nbDims;
        for (int32_t k = 0; k < Dims::MAX_DIMS; ++k)
            outExprs[i * Dims::MAX_DIMS + k] = k < out[i].nbDims ? const_cast<IDimensionExpr*>(out[i].d[k]) : nullptr;
    }
    return rc;
}

// Number of supported combinations, each written as nbInputs + nbOutputs (type, format) pairs.
int32_t harness_format_combinations(void* build, int32_t nbInputs, int32_t nbOutputs, TensorSpec const* specs, int32_t* types, int32_t* formats, int32_t capacity)
{
    auto* b = static_cast<IPluginV3QuickBuild*>(build);
    std::vector<DynamicPluginTensorDesc> io = dynamicDescs(nbInputs + nbOutputs, specs);
    int32_t n = b->getNbSupportedFormatCombinations(io.data(), nbInputs, nbOutputs);
    if (n <= 0) return n;
    std::vector<PluginTensorDesc> combos(static_cast<size_t>(n) * (nbInputs + nbOutputs));
    if (b->getSupportedFormatCombinations(io.data(), nbInputs, nbOutputs, combos.data(), n) != 0) return -1;
    for (size_t i = 0; i < combos.size() && static_cast<int32_t>(i) < capacity; ++i)
    {
        types[i] = static_cast<int32_t>(combos[i].type);
        formats[i] = static_cast<int32_t>(combos[i].format);
    }
    return n;
}

int32_t harness_configure(void* build, int32_t nbInputs, int32_t nbOutputs, TensorSpec const* specs)
{
    std::vector<DynamicPluginTensorDesc> io = dynamicDescs(nbInputs + nbOutputs, specs);
    return static_cast<IPluginV3QuickBuild*>(build)->configurePlugin(io.data(), nbInputs, io.data() + nbInputs, nbOutputs);
}

int32_t harness_tactics(void* build, int32_t* tactics, int32_t capacity)
{
    auto* b = static_cast<IPluginV3QuickBuild*>(build);
    int32_t n = b->getNbTactics();
    if (n <= 0) return n;
    std::vector<int32_t> t(n);
    if (b->getValidTactics(t.data(), n) != 0) return -1;
    for (int32_t i = 0; i < n && i < capacity; ++i) tactics[i] = t[i];
    return n;
}

char const* harness_timing_cache_id(void* build) { return static_cast<IPluginV3QuickBuild*>(build)->getTimingCacheID(); }

int32_t harness_set_tactic(void* aotBuild, int32_t tactic) { return static_cast<IPluginV3QuickAOTBuild*>(aotBuild)->setTactic(tactic); }

// getLaunchParams: the seven launch slots and the extra arguments, each as (expression,
// PluginArgType, PluginArgDataType); -2 marks a slot the plugin never set.
int32_t harness_launch_params(void* aotBuild, int32_t nbInputs, int32_t const* nbDims, void* const* inputExprs, int32_t nbOutputs, TensorSpec const* specs,
    void** slotExprs, int32_t* slotTypes, int32_t* slotDataTypes, int32_t* nbExtra, void** extraExprs, int32_t* extraTypes, int32_t* extraDataTypes)
{
    std::vector<DimsExprs> in = exprs(nbInputs, nbDims, inputExprs);
    std::vector<DynamicPluginTensorDesc> io = dynamicDescs(nbInputs + nbOutputs, specs);
    Launch launch;
    SymExprs extra;
    int32_t rc = static_cast<IPluginV3QuickAOTBuild*>(aotBuild)->getLaunchParams(in.data(), io.data(), nbInputs, nbOutputs, &launch, &extra, gBuilder);
    for (int32_t s = 0; s < 7; ++s) export_value(launch.impl.slot[s], &slotExprs[s], &slotTypes[s], &slotDataTypes[s]);
    *nbExtra = extra.impl.count;
    for (int32_t i = 0; i < extra.impl.count; ++i) export_value(extra.impl.value[i], &extraExprs[i], &extraTypes[i], &extraDataTypes[i]);
    return rc;
}

// getKernel, then what libnvinfer may do before it reads the name: allocate. The name is
// copied right at the return (nameAtReturn) and again after 28 small allocations, each
// filled (nameAfterAllocations): a name that lives in freed memory changes in between.
int32_t harness_get_kernel(void* aotBuild, int32_t nbInputs, int32_t nbOutputs, TensorSpec const* specs, char* nameAtReturn, char* nameAfterAllocations,
    int32_t nameCapacity, char const** kernel, int32_t* kernelSize)
{
    std::vector<PluginTensorDesc> io(nbInputs + nbOutputs);
    for (int32_t i = 0; i < nbInputs + nbOutputs; ++i)
    {
        io[i].dims = toDims(specs[i].nbDims, specs[i].desc);
        io[i].type = static_cast<DataType>(specs[i].type);
        io[i].format = static_cast<TensorFormat>(specs[i].format);
        io[i].scale = 1.0f;
    }
    char const* name = nullptr;
    char* compiled = nullptr;
    int32_t size = 0;
    int32_t rc = static_cast<IPluginV3QuickAOTBuild*>(aotBuild)->getKernel(io.data(), nbInputs, io.data() + nbInputs, nbOutputs, &name, &compiled, &size);
    auto copyName = [&](char* dst) {
        std::memset(dst, 0, nameCapacity);
        if (name == nullptr) return;
        for (int32_t i = 0; i + 1 < nameCapacity; ++i)
        {
            unsigned char ch = static_cast<unsigned char>(name[i]);
            if (ch == 0) break;
            dst[i] = (ch >= 0x20 && ch < 0x7f) ? static_cast<char>(ch) : '?';  // the name's bytes, printable
        }
    };
    copyName(nameAtReturn);
    std::vector<void*> blocks;
    for (int32_t k = 1; k <= 28; ++k)
    {
        size_t bytes = static_cast<size_t>(8 * k);
        void* p = std::malloc(bytes);
        std::memset(p, 0x5a, bytes);
        blocks.push_back(p);
    }
    copyName(nameAfterAllocations);
    for (void* p : blocks) std::free(p);
    *kernel = compiled;
    *kernelSize = size;
    return rc;
}

} // extern "C"
