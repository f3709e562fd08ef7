// Shard codec helpers, written once against VF (simd_*.hpp) and compiled per ISA.
// Included after kernel_impl.hpp inside `namespace pgrid::<isa>` within a target region.

/// row[i] <- rint(row[i] * inv_step) (kept as a float), residual[i] <- the rounding
/// residual (in steps); returns the sum of the residuals.
double round_row(float* row, std::int64_t n, float inv_step, float* residual) {
    constexpr int W = VF::W;
    const VF inv = VF::set1(inv_step);
    double total = 0.0;
    std::int64_t i = 0;
    for (; i + W <= n; i += W) {
        const VF x = VF::load(row + i) * inv;
        const VF q = vround(x);
        const VF r = x - q;
        q.store(row + i);
        r.store(residual + i);
        total += static_cast<double>(r.sum());
    }
    for (; i < n; ++i) {
        const float x = row[i] * inv_step;
        const float q = std::nearbyint(x);
        row[i] = q;
        residual[i] = x - q;
        total += static_cast<double>(x - q);
    }
    return total;
}

/// Indices i (ascending) with lo < sign*residual[i] <= hi, at most `need` of them, into
/// out; returns how many. Hits are rare at high thresholds, so whole vectors are tested
/// and only lanes that pass are looked at.
std::int64_t pick_in_tier(const float* residual, std::int64_t n, float sign, float lo, float hi,
                          std::int64_t need, std::int64_t* out) {
    constexpr int W = VF::W;
    const VF s = VF::set1(sign), vlo = VF::set1(lo), vhi = VF::set1(hi);
    std::int64_t got = 0;
    std::int64_t i = 0;
    alignas(64) float sr[W];
    for (; i + W <= n && got < need; i += W) {
        const VF v = VF::load(residual + i) * s;
        // any lane with lo < v <= hi: select_le(v, hi, 1) masked by v > lo
        const VF hit = select_gt(v, vlo, select_le(v, vhi, VF::set1(1.0f)), VF::zero());
        if (hit.sum() == 0.0f) continue;
        v.store(sr);
        for (int k = 0; k < W && got < need; ++k)
            if (sr[k] > lo && sr[k] <= hi) out[got++] = i + k;
    }
    for (; i < n && got < need; ++i) {
        const float v = sign * residual[i];
        if (v > lo && v <= hi) out[got++] = i;
    }
    return got;
}

/// row[i] <- row[i] * step + 0 (integers of steps back to values; -0 becomes +0).
void scale_row(float* row, std::int64_t n, float step) {
    constexpr int W = VF::W;
    const VF s = VF::set1(step);
    std::int64_t i = 0;
    for (; i + W <= n; i += W) (VF::load(row + i) * s + VF::zero()).store(row + i);
    for (; i < n; ++i) row[i] = row[i] * step + 0.0f;
}

/// Largest |value| and largest value of a row, and whether every value is finite (an
/// inf or NaN makes value * 0 a NaN, which the running sum keeps: no extra pass).
void row_extent(const float* row, std::int64_t n, float* max_abs, float* max_val, bool* finite) {
    constexpr int W = VF::W;
    VF ma = VF::zero(), mv = VF::set1(-3.4e38f), nf = VF::zero();
    std::int64_t i = 0;
    for (; i + W <= n; i += W) {
        const VF v = VF::load(row + i);
        ma = vmax(ma, vabs(v));
        mv = vmax(mv, v);
        nf = nf + v * VF::zero();
    }
    alignas(64) float a[W], b[W];
    ma.store(a);
    mv.store(b);
    float ra = 0.0f, rb = -3.4e38f, rf = nf.sum();
    for (int k = 0; k < W; ++k) {
        ra = a[k] > ra ? a[k] : ra;
        rb = b[k] > rb ? b[k] : rb;
    }
    for (; i < n; ++i) {
        const float v = row[i];
        ra = std::fabs(v) > ra ? std::fabs(v) : ra;
        rb = v > rb ? v : rb;
        rf += v * 0.0f;
    }
    *max_abs = ra;
    *max_val = rb;
    *finite = rf == 0.0f;
}

/// HDF5's shuffle filter for 4-byte elements: out[k*n + i] = byte k of element i.
void shuffle4(const float* in, std::int64_t n, std::uint8_t* out) {
    const std::uint32_t* u = reinterpret_cast<const std::uint32_t*>(in);
    std::uint8_t* p0 = out;
    std::uint8_t* p1 = out + n;
    std::uint8_t* p2 = out + 2 * n;
    std::uint8_t* p3 = out + 3 * n;
    for (std::int64_t i = 0; i < n; ++i) {  // vectorised by the compiler for the ISA
        const std::uint32_t w = u[i];
        p0[i] = static_cast<std::uint8_t>(w);
        p1[i] = static_cast<std::uint8_t>(w >> 8);
        p2[i] = static_cast<std::uint8_t>(w >> 16);
        p3[i] = static_cast<std::uint8_t>(w >> 24);
    }
}

/// Inverse of shuffle4: element i from bytes in[k*n + i], k = 0..3.
void unshuffle4(const std::uint8_t* in, std::int64_t n, float* out) {
    const std::uint8_t* p0 = in;
    const std::uint8_t* p1 = in + n;
    const std::uint8_t* p2 = in + 2 * n;
    const std::uint8_t* p3 = in + 3 * n;
    std::uint32_t* u = reinterpret_cast<std::uint32_t*>(out);
    for (std::int64_t i = 0; i < n; ++i)  // vectorised by the compiler for the ISA
        u[i] = static_cast<std::uint32_t>(p0[i]) | static_cast<std::uint32_t>(p1[i]) << 8 |
               static_cast<std::uint32_t>(p2[i]) << 16 | static_cast<std::uint32_t>(p3[i]) << 24;
}
