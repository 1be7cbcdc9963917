// Standalone correctness harness for the rvqfast CUDA kernels (no torch needed).
//
// Build and run on a GPU machine (from the repository root):
//   nvcc -O2 -std=c++17 -Ikernels -arch=native kernels/cuda/test/check_kernels.cu \
//        kernels/cuda/search.cu kernels/cuda/codes.cu -o /tmp/check_kernels && /tmp/check_kernels
// Every case runs with the TF32 and the BF16 certified screens; the BF16 approximate mode is run
// and counted. Each case is checked against an fp64 brute force on the host with the project's
// near-tie rule:
// an index may differ from the true nearest only if d(x, c_got) <= d_best + 1e-4 (1 + d_best).
// Exit status 0 = all cases passed.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "cuda/rvqfast_cuda.cuh"

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (cudaError_t)(call);                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            std::exit(2);                                                                          \
        }                                                                                          \
    } while (0)

namespace {

int g_failures = 0;
// The search mode every case runs with (main loops over the certified modes).
int g_mode = RVQFAST_CUDA_TF32_CERTIFIED;

const char* mode_name(int mode) {
    return mode == RVQFAST_CUDA_TF32_CERTIFIED ? "tf32-certified"
           : mode == RVQFAST_CUDA_BF16_CERTIFIED ? "bf16-certified" : "bf16-approx";
}

void expect(bool ok, const std::string& what) {
    std::printf("  [%s] %s\n", ok ? "ok" : "FAIL", what.c_str());
    if (!ok) ++g_failures;
}

template <class T>
T* to_device(const std::vector<T>& h) {
    T* p = nullptr;
    CK(cudaMalloc(&p, sizeof(T) * (h.size() ? h.size() : 1)));
    if (!h.empty()) CK(cudaMemcpy(p, h.data(), sizeof(T) * h.size(), cudaMemcpyHostToDevice));
    return p;
}

template <class T>
std::vector<T> to_host(const T* p, size_t n) {
    std::vector<T> h(n);
    CK(cudaMemcpy(h.data(), p, sizeof(T) * n, cudaMemcpyDeviceToHost));
    return h;
}

double sqdist64(const float* a, const float* b, int64_t d) {
    double s = 0;
    for (int64_t i = 0; i < d; ++i) {
        const double t = double(a[i]) - double(b[i]);
        s += t * t;
    }
    return s;
}

// Number of rows whose index is not a (near-)nearest code.
int64_t count_not_nearest(const std::vector<float>& x, const std::vector<float>& cb, const std::vector<int64_t>& idx,
                          int64_t idx_stride, int64_t n, int64_t k, int64_t d) {
    int64_t bad = 0;
    for (int64_t r = 0; r < n; ++r) {
        double best = INFINITY;
        for (int64_t j = 0; j < k; ++j) best = std::min(best, sqdist64(&x[r * d], &cb[j * d], d));
        const int64_t j = idx[r * idx_stride];
        if (j < 0 || j >= k) { ++bad; continue; }
        if (sqdist64(&x[r * d], &cb[j * d], d) > best + 1e-4 * (1 + best)) ++bad;
    }
    return bad;
}

struct Result {
    std::vector<int64_t> idx;
    std::vector<float> sqdist;
    unsigned int fallbacks;
};

Result run_nearest(const std::vector<float>& x, const std::vector<float>& cb, int64_t n, int64_t k, int64_t d, int mode) {
    float *dx = to_device(x), *dc = to_device(cb), *dd = nullptr;
    int64_t* di = nullptr;
    unsigned int* df = nullptr;
    void* ws = nullptr;
    CK(cudaMalloc(&dd, sizeof(float) * n));
    CK(cudaMalloc(&di, sizeof(int64_t) * n));
    CK(cudaMalloc(&df, sizeof(unsigned int)));
    CK(cudaMemset(df, 0, sizeof(unsigned int)));
    CK(cudaMalloc(&ws, rvqfast_cuda_workspace_bytes(n, 1, k, d)));
    CK(rvqfast_cuda_nearest_code(dx, dc, n, k, d, mode, di, dd, ws, df, 0));
    CK(cudaDeviceSynchronize());
    Result r{to_host(di, n), to_host(dd, n), to_host(df, 1)[0]};
    cudaFree(dx); cudaFree(dc); cudaFree(dd); cudaFree(di); cudaFree(df); cudaFree(ws);
    return r;
}

Result check_nearest(const char* name, const std::vector<float>& x, const std::vector<float>& cb, int64_t n, int64_t k,
                     int64_t d) {
    std::printf("nearest_code %s (N=%lld K=%lld D=%lld)\n", name, (long long)n, (long long)k, (long long)d);
    Result r = run_nearest(x, cb, n, k, d, g_mode);
    expect(count_not_nearest(x, cb, r.idx, 1, n, k, d) == 0, "every index is a (near-)nearest code");
    double worst = 0;
    for (int64_t i = 0; i < n; ++i) {
        const double ex = sqdist64(&x[i * d], &cb[r.idx[i] * d], d);
        worst = std::max(worst, std::fabs(r.sqdist[i] - ex) / (1e-4 + ex));
    }
    expect(worst < 1e-4, "sqdist is the winner's exact squared distance (rel err " + std::to_string(worst) + ")");
    std::printf("  fallback rows: %u of %lld\n", r.fallbacks, (long long)n);
    return r;
}

std::vector<float> randn(std::mt19937& g, size_t count, float scale = 1.f, float offset = 0.f) {
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<float> v(count);
    for (auto& e : v) e = offset + scale * nd(g);
    return v;
}

void case_random(std::mt19937& g, int64_t n, int64_t k, int64_t d) {
    check_nearest("random", randn(g, n * d), randn(g, k * d), n, k, d);
}

void case_ties(std::mt19937& g) {
    const int64_t k0 = 70, d = 9, k = 2 * k0, n = 200;
    std::vector<float> cb = randn(g, k0 * d);
    cb.insert(cb.end(), cb.begin(), cb.end());  // code j and j + 70 are identical
    std::vector<float> x(n * d);
    std::vector<int64_t> want(n);
    std::uniform_int_distribution<int64_t> pick(0, k - 1);
    for (int64_t r = 0; r < n; ++r) {
        const int64_t j = pick(g);
        want[r] = j % k0;
        for (int64_t i = 0; i < d; ++i) x[r * d + i] = cb[j * d + i];
    }
    std::printf("nearest_code exact ties (duplicated codes, rows on codes)\n");
    Result r = run_nearest(x, cb, n, k, d, g_mode);
    bool ok = true;
    for (int64_t i = 0; i < n; ++i) ok = ok && r.idx[i] == want[i] && r.sqdist[i] == 0.f;
    expect(ok, "ties resolve to the lowest index, distance 0");
}

void case_far_from_origin(std::mt19937& g) {
    const int64_t k = 300, d = 16, n = 500;
    std::vector<float> cb = randn(g, k * d, 1e-2f, 1e4f);
    std::vector<float> x(n * d);
    std::uniform_int_distribution<int64_t> pick(0, k - 1);
    std::normal_distribution<float> nd(0.f, 1e-3f);
    for (int64_t r = 0; r < n; ++r) {
        const int64_t j = pick(g);
        for (int64_t i = 0; i < d; ++i) x[r * d + i] = cb[j * d + i] + nd(g);
    }
    check_nearest("far from the origin (1e4 offset, 1e-2 spread)", x, cb, n, k, d);
}

void case_crowded(std::mt19937& g) {
    // Codes +-e_i (mean exactly 0) and rows of norm ~1e-2: every code is at distance ~1 and the
    // gaps (~1e-4) are far below the TF32 and BF16 error bounds, so certification must fail and
    // the exact fallback scan decide.
    const int64_t d = 64, k = 2 * d, n = 300;
    std::vector<float> cb(k * d, 0.f);
    for (int64_t i = 0; i < d; ++i) {
        cb[(2 * i) * d + i] = 1.f;
        cb[(2 * i + 1) * d + i] = -1.f;
    }
    std::vector<float> x = randn(g, n * d, 1e-3f);
    std::printf("nearest_code crowded distances (exercises the fallback)\n");
    Result r = run_nearest(x, cb, n, k, d, g_mode);
    expect(count_not_nearest(x, cb, r.idx, 1, n, k, d) == 0, "every index is a (near-)nearest code");
    bool exact = true;
    for (int64_t row = 0; row < n; ++row) {
        int64_t am = 0;
        for (int64_t i = 1; i < d; ++i)
            if (std::fabs(x[row * d + i]) > std::fabs(x[row * d + am])) am = i;
        // Code 2i+s is the signed axis i; it must match the largest |x_i| up to fp32 rounding of
        // distances near 1 (a gap below ~1e-7 is a genuine tie in fp32).
        const int64_t axis = r.idx[row] / 2;
        const bool sign_ok = (r.idx[row] % 2 == 1) == (x[row * d + axis] < 0);
        exact = exact && sign_ok && std::fabs(x[row * d + axis]) >= std::fabs(x[row * d + am]) - 2e-7f;
    }
    expect(exact, "index = the signed axis of the largest |x_i| (up to fp32 ties)");
    expect(r.fallbacks > 0, "fallback scan was used (" + std::to_string(r.fallbacks) + " rows)");
}

void case_bf16_ambiguous(std::mt19937& g) {
    // Two clusters of codes at +-base, 1e-5 apart within a cluster: after centring (mean ~0) they
    // differ far below bf16 (and TF32) resolution, so the bound must refuse and the exact scan decide.
    const int64_t k = 96, d = 32, n = 200;
    std::vector<float> base = randn(g, d), cb(k * d), x(n * d);
    std::vector<float> dir = randn(g, k * d, 1e-5f);
    for (int64_t j = 0; j < k; ++j)
        for (int64_t i = 0; i < d; ++i) cb[j * d + i] = (j % 2 ? -base[i] : base[i]) + dir[j * d + i];
    std::uniform_int_distribution<int64_t> pick(0, k - 1);
    std::normal_distribution<float> nd(0.f, 2e-6f);
    for (int64_t r = 0; r < n; ++r) {
        const int64_t j = pick(g);
        for (int64_t i = 0; i < d; ++i) x[r * d + i] = cb[j * d + i] + nd(g);
    }
    Result r = check_nearest("codes closer than bf16 resolution", x, cb, n, k, d);
    expect(r.fallbacks > 0, "fallback scan was used (" + std::to_string(r.fallbacks) + " rows)");
}

void case_approx(std::mt19937& g, int64_t n, int64_t k, int64_t d) {
    // BF16 screen without the rescan: no guarantee, so only count (the re-rank is still exact).
    std::vector<float> x = randn(g, n * d), cb = randn(g, k * d);
    Result r = run_nearest(x, cb, n, k, d, RVQFAST_CUDA_BF16_APPROX);
    bool in_range = true;
    double worst = 0;
    for (int64_t i = 0; i < n; ++i) {
        in_range = in_range && r.idx[i] >= 0 && r.idx[i] < k;
        if (!in_range) break;
        const double ex = sqdist64(&x[i * d], &cb[r.idx[i] * d], d);
        worst = std::max(worst, std::fabs(r.sqdist[i] - ex) / (1e-4 + ex));
    }
    std::printf("nearest_code bf16-approx random (N=%lld K=%lld D=%lld)\n", (long long)n, (long long)k, (long long)d);
    expect(in_range && worst < 1e-4, "indices in range, sqdist exact for the returned code");
    if (in_range)
        std::printf("  rows not (near-)nearest: %lld of %lld (approximate mode)\n",
                    (long long)count_not_nearest(x, cb, r.idx, 1, n, k, d), (long long)n);
}

void case_rvq(std::mt19937& g, int64_t n, int64_t q, int64_t k, int64_t d) {
    std::printf("rvq_encode / rvq_decode / ema_stats (N=%lld Q=%lld K=%lld D=%lld)\n", (long long)n, (long long)q,
                (long long)k, (long long)d);
    std::vector<float> x = randn(g, n * d), cbs;
    for (int64_t s = 0; s < q; ++s) {
        std::vector<float> c = randn(g, k * d, 1.f / float(1 + s));
        cbs.insert(cbs.end(), c.begin(), c.end());
    }
    float *dx = to_device(x), *dc = to_device(cbs), *dq = nullptr, *dout = nullptr;
    int64_t* di = nullptr;
    void* ws = nullptr;
    CK(cudaMalloc(&dq, sizeof(float) * n * d));
    CK(cudaMalloc(&dout, sizeof(float) * n * d));
    CK(cudaMalloc(&di, sizeof(int64_t) * n * q));
    CK(cudaMalloc(&ws, rvqfast_cuda_workspace_bytes(n, q, k, d)));
    unsigned int* df = nullptr;
    CK(cudaMalloc(&df, sizeof(unsigned int)));
    CK(cudaMemset(df, 0, sizeof(unsigned int)));
    CK(rvqfast_cuda_rvq_encode(dx, dc, n, q, k, d, g_mode, di, dq, ws, df, 0));
    CK(cudaDeviceSynchronize());
    std::vector<int64_t> idx = to_host(di, n * q);
    std::vector<float> quant = to_host(dq, n * d);
    std::printf("  fallback row-stages: %u of %lld\n", to_host(df, 1)[0], (long long)(n * q));
    cudaFree(df);

    // Stage by stage on the host, with the kernel's own indices: each must be (near-)nearest to
    // the residual, and quant must equal the fp32 stage-order sum of the chosen codes exactly.
    std::vector<float> res = x, qsum(n * d, 0.f);
    bool nearest_ok = true;
    for (int64_t s = 0; s < q; ++s) {
        const float* cb = &cbs[s * k * d];
        std::vector<float> cbv(cb, cb + k * d);
        std::vector<int64_t> col(n);
        for (int64_t r = 0; r < n; ++r) col[r] = idx[r * q + s];
        nearest_ok = nearest_ok && count_not_nearest(res, cbv, col, 1, n, k, d) == 0;
        for (int64_t r = 0; r < n; ++r)
            for (int64_t i = 0; i < d; ++i) {
                const float c = cb[col[r] * d + i];
                res[r * d + i] -= c;
                qsum[r * d + i] += c;
            }
    }
    expect(nearest_ok, "every stage's index is (near-)nearest to its residual");
    expect(quant == qsum, "quantized == fp32 sum of the chosen codes (bitwise)");

    // Decode with some stages dropped (-1).
    for (int64_t r = 0; r < n; r += 3) idx[r * q + (r % q)] = -1;
    CK(cudaMemcpy(di, idx.data(), sizeof(int64_t) * n * q, cudaMemcpyHostToDevice));
    CK(rvqfast_cuda_rvq_decode(di, dc, n, q, k, d, dout, 0));
    CK(cudaDeviceSynchronize());
    std::vector<float> dec = to_host(dout, n * d), want(n * d, 0.f);
    for (int64_t r = 0; r < n; ++r)
        for (int64_t s = 0; s < q; ++s) {
            const int64_t j = idx[r * q + s];
            if (j < 0) continue;
            for (int64_t i = 0; i < d; ++i) want[r * d + i] += cbs[(s * k + j) * d + i];
        }
    expect(dec == want, "rvq_decode == stage-order sum, -1 skipped (bitwise)");

    // EMA statistics of stage 0's assignment (with the -1 rows ignored).
    std::vector<int64_t> col(n);
    for (int64_t r = 0; r < n; ++r) col[r] = idx[r * q];
    int64_t* dcol = to_device(col);
    float *dcnt = nullptr, *dsum = nullptr;
    CK(cudaMalloc(&dcnt, sizeof(float) * k));
    CK(cudaMalloc(&dsum, sizeof(float) * k * d));
    CK(rvqfast_cuda_ema_stats(dx, dcol, n, d, k, dcnt, dsum, 0));
    CK(cudaDeviceSynchronize());
    std::vector<float> cnt = to_host(dcnt, k), sum = to_host(dsum, k * d);
    std::vector<double> wc(k, 0), ws2(k * d, 0);
    for (int64_t r = 0; r < n; ++r) {
        if (col[r] < 0) continue;
        wc[col[r]] += 1;
        for (int64_t i = 0; i < d; ++i) ws2[col[r] * d + i] += x[r * d + i];
    }
    bool cnt_ok = true, sum_ok = true;
    for (int64_t j = 0; j < k; ++j) cnt_ok = cnt_ok && double(cnt[j]) == wc[j];
    for (int64_t e = 0; e < k * d; ++e) sum_ok = sum_ok && std::fabs(sum[e] - ws2[e]) <= 1e-4 * (1 + std::fabs(ws2[e]));
    expect(cnt_ok, "ema_stats counts exact");
    expect(sum_ok, "ema_stats sums within fp32 rounding");
    cudaFree(dx); cudaFree(dc); cudaFree(dq); cudaFree(dout); cudaFree(di); cudaFree(ws);
    cudaFree(dcol); cudaFree(dcnt); cudaFree(dsum);
}

}  // namespace

int main() {
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    for (int mode : {RVQFAST_CUDA_TF32_CERTIFIED, RVQFAST_CUDA_BF16_CERTIFIED}) {
        g_mode = mode;
        std::printf("=== mode %s\n", mode_name(mode));
        std::mt19937 g(1234);
        case_random(g, 1, 1, 1);
        case_random(g, 77, 67, 33);
        case_random(g, 1000, 512, 64);
        case_random(g, 1000, 512, 512);
        case_random(g, 513, 4096, 130);
        case_random(g, 256, 300, 1030);
        case_random(g, 20, 10, RVQFAST_CUDA_BF16_MAX_D + 3);  // BF16 bound off: TF32 screen
        case_ties(g);
        case_far_from_origin(g);
        case_crowded(g);
        case_bf16_ambiguous(g);
        case_rvq(g, 1000, 6, 512, 64);
        case_rvq(g, 2000, 6, 512, 512);
        case_rvq(g, 37, 3, 5, 7);
    }
    std::printf("=== mode %s\n", mode_name(RVQFAST_CUDA_BF16_APPROX));
    std::mt19937 g(99);
    case_approx(g, 1000, 512, 64);
    case_approx(g, 1000, 512, 512);
    std::printf(g_failures ? "FAILED: %d check(s)\n" : "all checks passed\n", g_failures);
    return g_failures ? 1 : 0;
}
