// pgrid_cli._core: the thin pybind11 layer over the C++ core. It checks every array at
// the boundary (dtype, shape, contiguity, writability) and raises ValueError instead of
// ever touching memory it was not given; the computation runs without the GIL. Integer
// and float arguments are taken as Python objects and range-checked here, so that any
// Python int gets a ValueError naming the argument rather than pybind's signature dump.
// The core's std::invalid_argument becomes ValueError (pybind's standard translation).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <sstream>
#include <string>

#include "build_info.hpp"
#include "pgrid/codec.hpp"
#include "pgrid/energy.hpp"
#include "pgrid/grid.hpp"

namespace py = pybind11;

namespace {

template <class... Args>
[[noreturn]] void value_error(Args&&... parts) {
    std::ostringstream os;
    (os << ... << parts);
    throw py::value_error(os.str());
}

std::string shape_str(const py::array& a) {
    std::ostringstream os;
    os << "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) os << (d ? ", " : "") << a.shape(d);
    os << (a.ndim() == 1 ? ",)" : ")");
    return os.str();
}

/// Require dtype T, C-contiguous, aligned, and the given shape (-1 = any extent).
template <class T>
void require(const py::array& a, const char* name, std::initializer_list<py::ssize_t> shape,
             bool writeable = false) {
    if (!py::dtype::of<T>().is(a.dtype()))
        value_error(name, " must have dtype ", std::string(py::str(py::dtype::of<T>())), ", got ",
                    std::string(py::str(a.dtype())));
    if (a.ndim() != static_cast<py::ssize_t>(shape.size()))
        value_error(name, " must have ", shape.size(), " dimensions, got shape ", shape_str(a));
    py::ssize_t d = 0;
    for (py::ssize_t want : shape) {
        if (want >= 0 && a.shape(d) != want)
            value_error(name, " has shape ", shape_str(a), ": dimension ", d, " must be ", want);
        ++d;
    }
    const int flags = a.flags();
    if (!(flags & py::array::c_style)) value_error(name, " must be C-contiguous");
    if (!(flags & py::detail::npy_api::NPY_ARRAY_ALIGNED_)) value_error(name, " must be aligned");
    if (writeable && !(flags & py::detail::npy_api::NPY_ARRAY_WRITEABLE_))
        value_error(name, " must be writeable");
}

const char* type_name(const py::handle& h) { return Py_TYPE(h.ptr())->tp_name; }

/// A Python integer (anything with __index__) in [lo, hi]; `range` describes the accepted
/// values in the ValueError.
long long int_arg(const py::handle& h, const char* name, long long lo, long long hi,
                  const char* range) {
    PyObject* index = PyNumber_Index(h.ptr());
    if (!index) {
        PyErr_Clear();
        throw py::type_error(std::string(name) + " must be an integer, got " + type_name(h));
    }
    const py::object owned = py::reinterpret_steal<py::object>(index);
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(index, &overflow);
    if (overflow != 0 || v < lo || v > hi)
        value_error(name, " must be ", range, ", got ", std::string(py::str(owned)));
    return v;
}

/// A Python real number as a double (Python ints too large for a double are a ValueError).
double float_arg(const py::handle& h, const char* name) {
    const double v = PyFloat_AsDouble(h.ptr());
    if (v == -1.0 && PyErr_Occurred()) {
        const bool overflow = PyErr_ExceptionMatches(PyExc_OverflowError);
        PyErr_Clear();
        if (overflow)
            value_error(name, " is out of the range of a double, got ", std::string(py::str(h)));
        throw py::type_error(std::string(name) + " must be a real number, got " + type_name(h));
    }
    return v;
}

int threads_arg(const py::handle& h) {
    static const std::string range =
        "between 1 and " + std::to_string(pgrid::kMaxThreads) + " (0: every hardware thread)";
    return static_cast<int>(int_arg(h, "threads", 0, pgrid::kMaxThreads, range.c_str()));
}

pgrid::Isa isa_from(const std::string& isa) {
    static const std::vector<pgrid::Isa> supported = pgrid::supported_isas();  // CPUID once
    pgrid::Isa chosen = isa.empty() ? supported.back() : pgrid::parse_isa(isa);
    for (pgrid::Isa s : supported)
        if (s == chosen) return chosen;
    value_error(
        "instruction set '", isa, "' is not supported by this CPU (supported: ",
        [] {
            std::string out;
            for (pgrid::Isa s : pgrid::supported_isas())
                out += std::string(out.empty() ? "" : ", ") + pgrid::isa_name(s);
            return out;
        }(),
        ")");
}

/// Check the atom and box arrays against each other and describe them for the core.
pgrid::BatchInput batch_input(const py::array& positions, const py::array& offsets,
                              const py::array& channels, const py::array& sigmas,
                              const py::array& weights, const py::array& origins,
                              const py::array& axes, const py::array& periodic,
                              const py::array& grid, const char* grid_name) {
    require<double>(positions, "positions", {-1, 3});
    const py::ssize_t m = positions.shape(0);
    require<std::int64_t>(offsets, "offsets", {-1});
    if (offsets.shape(0) < 1) value_error("offsets must have at least one entry");
    const py::ssize_t b = offsets.shape(0) - 1;
    require<std::int32_t>(channels, "channels", {m});
    require<double>(sigmas, "sigmas", {m});
    require<double>(weights, "weights", {m});
    require<double>(origins, "origins", {b, 3});
    require<double>(axes, "axes", {b, 3, 3});
    require<bool>(periodic, "periodic", {b});
    if (grid.ndim() != 5)
        value_error(grid_name, " must have shape (B, C, nx, ny, nz), got ", shape_str(grid));
    if (grid.shape(0) != b)
        value_error(grid_name, " holds ", grid.shape(0), " structures but offsets describe ", b);
    // Before the extents are narrowed to int: each at most pgrid::kMaxAxisVoxels.
    const std::int64_t extent[3] = {grid.shape(2), grid.shape(3), grid.shape(4)};
    pgrid::check_grid_shape(b, grid.shape(1), extent, grid_name);
    pgrid::BatchInput in;
    in.positions = static_cast<const double*>(positions.data());
    in.offsets = static_cast<const std::int64_t*>(offsets.data());
    in.channels = static_cast<const std::int32_t*>(channels.data());
    in.sigmas = static_cast<const double*>(sigmas.data());
    in.weights = static_cast<const double*>(weights.data());
    in.origins = static_cast<const double*>(origins.data());
    in.axes = static_cast<const double*>(axes.data());
    in.periodic = static_cast<const std::uint8_t*>(periodic.data());
    in.n_structures = b;
    in.n_atoms = m;
    in.n_channels = static_cast<int>(grid.shape(1));
    for (int d = 0; d < 3; ++d) in.shape[d] = static_cast<int>(grid.shape(2 + d));
    return in;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "pgrid native kernel (private; use the pgrid_cli package API)";

    m.def(
        "grid_batch",
        [](const py::array& positions, const py::array& offsets, const py::array& channels,
           const py::array& sigmas, const py::array& weights, const py::array& origins,
           const py::array& axes, const py::array& periodic, py::array out,
           const py::object& threads, const std::string& isa, const py::object& streaming) {
            pgrid::Options opt;
            opt.threads = threads_arg(threads);
            opt.streaming =
                static_cast<int>(int_arg(streaming, "streaming", -1, 1, "-1 (automatic), 0 or 1"));
            require<float>(out, "out", {-1, -1, -1, -1, -1}, true);
            pgrid::BatchInput in = batch_input(positions, offsets, channels, sigmas, weights,
                                               origins, axes, periodic, out, "out");
            opt.isa = isa_from(isa);
            float* dst = static_cast<float*>(out.mutable_data());
            py::gil_scoped_release release;
            pgrid::grid_batch(in, dst, opt);
        },
        py::arg("positions"), py::arg("offsets"), py::arg("channels"), py::arg("sigmas"),
        py::arg("weights"), py::arg("origins"), py::arg("axes"), py::arg("periodic"),
        py::arg("out"), py::arg("threads") = 0, py::arg("isa") = "", py::arg("streaming") = -1,
        "Fill out (B, C, nx, ny, nz) float32 with the densities of a batch (see grid.hpp).");

    m.def(
        "grid_one",
        [](const py::array& positions, const py::object& channels, const py::object& sigma,
           const py::array& origin, const py::array& axes, const py::object& periodic,
           py::array out, const py::object& threads, const std::string& isa) {
            // grid_batch for one structure with one sigma, unit weights and a given box:
            // the per-atom arrays are made here rather than in NumPy, whose small-array
            // calls cost more than gridding a small molecule.
            pgrid::Options opt;
            opt.threads = threads_arg(threads);
            require<double>(positions, "positions", {-1, 3});
            const py::ssize_t m = positions.shape(0);
            std::vector<std::int32_t> chan;
            const std::int32_t* chan_ptr = nullptr;
            if (channels.is_none()) {
                chan.assign(static_cast<std::size_t>(m), 0);
                chan_ptr = chan.data();
            } else {
                const auto arr = py::reinterpret_borrow<py::array>(channels);
                require<std::int32_t>(arr, "channels", {m});
                chan_ptr = static_cast<const std::int32_t*>(arr.data());
            }
            const std::vector<double> sigmas(static_cast<std::size_t>(m),
                                             float_arg(sigma, "sigma"));
            const std::vector<double> weights(static_cast<std::size_t>(m), 1.0);
            require<double>(origin, "origin", {3});
            require<double>(axes, "axes", {3, 3});
            const std::uint8_t per = periodic.cast<bool>() ? 1 : 0;
            require<float>(out, "out", {-1, -1, -1, -1}, true);
            const std::int64_t extent[3] = {out.shape(1), out.shape(2), out.shape(3)};
            pgrid::check_grid_shape(1, out.shape(0), extent, "out");
            const std::int64_t offsets[2] = {0, static_cast<std::int64_t>(m)};
            pgrid::BatchInput in;
            in.positions = static_cast<const double*>(positions.data());
            in.offsets = offsets;
            in.channels = chan_ptr;
            in.sigmas = sigmas.data();
            in.weights = weights.data();
            in.origins = static_cast<const double*>(origin.data());
            in.axes = static_cast<const double*>(axes.data());
            in.periodic = &per;
            in.n_structures = 1;
            in.n_atoms = m;
            in.n_channels = static_cast<int>(out.shape(0));
            for (int d = 0; d < 3; ++d) in.shape[d] = static_cast<int>(out.shape(1 + d));
            opt.isa = isa_from(isa);
            float* dst = static_cast<float*>(out.mutable_data());
            py::gil_scoped_release release;
            pgrid::grid_batch(in, dst, opt);
        },
        py::arg("positions"), py::arg("channels"), py::arg("sigma"), py::arg("origin"),
        py::arg("axes"), py::arg("periodic"), py::arg("out"), py::arg("threads") = 0,
        py::arg("isa") = "",
        "grid_batch for one structure: one sigma, unit weights, channels (M,) int32 or None "
        "(all 0), the box as origin (3,) and axes (3, 3); out (C, nx, ny, nz) float32.");

    m.def(
        "bounds",
        [](const py::array& positions) {
            require<double>(positions, "positions", {-1, 3});
            if (positions.shape(0) == 0)
                value_error("cannot place a box around a structure with no atoms");
            double lo[3], hi[3];
            if (!pgrid::atom_bounds(static_cast<const double*>(positions.data()),
                                    positions.shape(0), lo, hi))
                value_error("positions contain NaN or infinite coordinates");
            return py::make_tuple(lo[0], lo[1], lo[2], hi[0], hi[1], hi[2]);
        },
        py::arg("positions"),
        "(lo_x, lo_y, lo_z, hi_x, hi_y, hi_z) of float64 (M, 3) positions (M >= 1, finite).");

    m.def(
        "grid_structures",
        [](const py::array& positions, const py::array& numbers, const py::object& offsets_arg,
           const py::object& lattices, const py::object& periodic, const py::object& weights,
           const py::array& element_channel, const py::object& sigma, const py::object& box_kind,
           const py::object& padding, const py::object& cube_side, const py::object& outside_limit,
           py::array out, const py::object& origins_out, const py::object& axes_out,
           const py::object& threads, const std::string& isa) {
            pgrid::Options opt;
            opt.threads = threads_arg(threads);
            require<double>(positions, "positions", {-1, 3});
            const py::ssize_t m = positions.shape(0);
            // offsets None: one structure of every atom.
            const std::int64_t one[2] = {0, static_cast<std::int64_t>(m)};
            const std::int64_t* offsets = one;
            py::ssize_t b = 1;
            if (!offsets_arg.is_none()) {
                const auto arr = py::reinterpret_borrow<py::array>(offsets_arg);
                require<std::int64_t>(arr, "offsets", {-1});
                if (arr.shape(0) < 1) value_error("offsets must have at least one entry");
                b = arr.shape(0) - 1;
                offsets = static_cast<const std::int64_t*>(arr.data());
            }
            pgrid::RecipeInput in;
            if (py::dtype::of<std::int32_t>().is(numbers.dtype())) {
                require<std::int32_t>(numbers, "numbers", {m});
                in.numbers32 = static_cast<const std::int32_t*>(numbers.data());
            } else {
                require<std::int64_t>(numbers, "numbers", {m});
                in.numbers64 = static_cast<const std::int64_t*>(numbers.data());
            }
            if (!lattices.is_none()) {
                const auto lat = py::reinterpret_borrow<py::array>(lattices);
                require<double>(lat, "lattices", {b, 3, 3});
                in.lattices = static_cast<const double*>(lat.data());
            }
            if (!periodic.is_none()) {
                const auto per = py::reinterpret_borrow<py::array>(periodic);
                require<bool>(per, "periodic", {b});
                in.periodic = static_cast<const std::uint8_t*>(per.data());
            }
            if (!weights.is_none()) {
                const auto w = py::reinterpret_borrow<py::array>(weights);
                require<double>(w, "weights", {m});
                in.weights = static_cast<const double*>(w.data());
            }
            require<std::int32_t>(element_channel, "element_channel", {-1});
            require<float>(out, "out", {-1, -1, -1, -1, -1}, true);
            // The boxes go to origins_out / axes_out when given, else to scratch.
            std::vector<double> box_scratch;
            double* o = nullptr;
            double* ax = nullptr;
            if (!origins_out.is_none()) {
                auto arr = py::reinterpret_borrow<py::array>(origins_out);
                require<double>(arr, "origins_out", {b, 3}, true);
                o = static_cast<double*>(arr.mutable_data());
            }
            if (!axes_out.is_none()) {
                auto arr = py::reinterpret_borrow<py::array>(axes_out);
                require<double>(arr, "axes_out", {b, 3, 3}, true);
                ax = static_cast<double*>(arr.mutable_data());
            }
            if (!o || !ax) box_scratch.resize(12 * static_cast<std::size_t>(b));
            if (!o) o = box_scratch.data();
            if (!ax) ax = box_scratch.data() + 3 * b;
            if (out.shape(0) != b)
                value_error("out holds ", out.shape(0), " structures but offsets describe ", b);
            const std::int64_t extent[3] = {out.shape(2), out.shape(3), out.shape(4)};
            pgrid::check_grid_shape(b, out.shape(1), extent, "out");
            in.positions = static_cast<const double*>(positions.data());
            in.offsets = offsets;
            in.element_channel = static_cast<const std::int32_t*>(element_channel.data());
            in.table_size = static_cast<int>(element_channel.shape(0));
            in.n_channels = static_cast<int>(out.shape(1));
            in.sigma = float_arg(sigma, "sigma");
            in.box_kind = static_cast<pgrid::BoxKind>(
                int_arg(box_kind, "box_kind", 0, 2, "0 (fit), 1 (tight) or 2 (cube)"));
            in.padding = float_arg(padding, "padding");
            in.cube_side = float_arg(cube_side, "cube_side");
            in.outside_limit = float_arg(outside_limit, "outside_limit");
            in.n_structures = b;
            in.n_atoms = m;
            for (int d = 0; d < 3; ++d) in.shape[d] = static_cast<int>(out.shape(2 + d));
            opt.isa = isa_from(isa);
            float* dst = static_cast<float*>(out.mutable_data());
            py::gil_scoped_release release;
            pgrid::grid_recipe(in, dst, o, ax, opt);
        },
        py::arg("positions"), py::arg("numbers"), py::arg("offsets"), py::arg("lattices"),
        py::arg("periodic"), py::arg("weights"), py::arg("element_channel"), py::arg("sigma"),
        py::arg("box_kind"), py::arg("padding"), py::arg("cube_side"), py::arg("outside_limit"),
        py::arg("out"), py::arg("origins_out") = py::none(), py::arg("axes_out") = py::none(),
        py::arg("threads") = 0, py::arg("isa") = "",
        "A recipe's per-call path in one call: boxes (into origins_out, axes_out if not None), "
        "channels "
        "from element_channel[Z] and the grids into out (see pgrid/grid.hpp, grid_recipe).");

    m.def(
        "grid_gradient_batch",
        [](const py::array& positions, const py::array& offsets, const py::array& channels,
           const py::array& sigmas, const py::array& weights, const py::array& origins,
           const py::array& axes, const py::array& periodic, const py::array& dgrid,
           const py::object& threads, const std::string& isa) {
            pgrid::Options opt;
            opt.threads = threads_arg(threads);
            require<float>(dgrid, "dgrid", {-1, -1, -1, -1, -1});
            pgrid::BatchInput in = batch_input(positions, offsets, channels, sigmas, weights,
                                               origins, axes, periodic, dgrid, "dgrid");
            opt.isa = isa_from(isa);
            py::array_t<double> dpos({static_cast<py::ssize_t>(in.n_atoms), py::ssize_t(3)});
            py::array_t<double> dw({static_cast<py::ssize_t>(in.n_atoms)});
            double* dpos_p = dpos.mutable_data();
            double* dw_p = dw.mutable_data();
            const float* g = static_cast<const float*>(dgrid.data());
            {
                py::gil_scoped_release release;
                pgrid::grid_gradient_batch(in, g, dpos_p, dw_p, opt);
            }
            return py::make_tuple(dpos, dw);
        },
        py::arg("positions"), py::arg("offsets"), py::arg("channels"), py::arg("sigmas"),
        py::arg("weights"), py::arg("origins"), py::arg("axes"), py::arg("periodic"),
        py::arg("dgrid"), py::arg("threads") = 0, py::arg("isa") = "",
        "Gradient of sum(dgrid * grid): returns (dpositions (M, 3), dweights (M,)) float64.");

    m.def(
        "zero_fill",
        [](py::array out, const py::object& threads) {
            const int nt = threads_arg(threads);
            require<float>(out, "out", {-1, -1, -1, -1, -1}, true);
            float* dst = static_cast<float*>(out.mutable_data());
            const auto n = static_cast<std::size_t>(out.size());
            py::gil_scoped_release release;
            pgrid::zero_fill(dst, n, nt);
        },
        py::arg("out"), py::arg("threads") = 0,
        "memset a (B, C, nx, ny, nz) float32 array to zero: the benchmarks' memory floor.");

    m.def(
        "normal_cdf",
        [](const py::array& t, const std::string& isa) {
            require<double>(t, "t", {-1});
            const pgrid::Isa chosen = isa_from(isa);
            py::array_t<double> cdf(t.shape(0)), pdf(t.shape(0));
            pgrid::normal_cdf(static_cast<const double*>(t.data()),
                              static_cast<std::size_t>(t.shape(0)), cdf.mutable_data(),
                              pdf.mutable_data(), chosen);
            return py::make_tuple(cdf, pdf);
        },
        py::arg("t"), py::arg("isa") = "",
        "Standard normal cdf and pdf as the kernel evaluates them (for tests).");

    m.def(
        "round_grid",
        [](py::array grid, const py::object& max_step_arg, const py::object& relative_arg,
           const std::string& isa) {
            if (!py::dtype::of<float>().is(grid.dtype()) || grid.ndim() < 1)
                value_error("grid must be a float32 array of at least one dimension");
            const int flags = grid.flags();
            if (!(flags & py::array::c_style) ||
                !(flags & py::detail::npy_api::NPY_ARRAY_WRITEABLE_))
                value_error("grid must be C-contiguous and writeable");
            // Range checks (positive, finite, usable in float32) are the core's.
            const double max_step = float_arg(max_step_arg, "max_step");
            const double relative = float_arg(relative_arg, "relative");
            const pgrid::Isa chosen = isa_from(isa);
            const std::int64_t rows = grid.ndim() == 1 ? 1 : grid.shape(0);
            const std::int64_t voxels = rows ? grid.size() / rows : 0;
            float* data = static_cast<float*>(grid.mutable_data());
            py::gil_scoped_release release;
            return pgrid::round_grid(data, rows, voxels, max_step, relative, chosen);
        },
        py::arg("grid"), py::arg("max_step"), py::arg("relative"), py::arg("isa") = "",
        "Round a (C, ...) float32 grid in place per pgrid/codec.hpp; returns the step used.");

    m.def(
        "nonzero_rows",
        [](const py::array& rows) {
            require<float>(rows, "rows", {-1, -1});
            const std::int64_t n = rows.shape(0), v = rows.shape(1);
            py::array_t<bool> out(n);
            pgrid::nonzero_rows(static_cast<const float*>(rows.data()), n, v, out.mutable_data(),
                                pgrid::best_isa());
            return out;
        },
        py::arg("rows"), "(n,) bool: which rows of an (n, v) float32 array hold a non-zero.");

    m.def(
        "shuffle4",
        [](const py::array& data, py::array out, const std::string& isa) {
            require<float>(data, "data", {-1});
            require<std::uint8_t>(out, "out", {4 * data.shape(0)}, true);
            const pgrid::Isa chosen = isa_from(isa);
            const float* in = static_cast<const float*>(data.data());
            auto* dst = static_cast<std::uint8_t*>(out.mutable_data());
            const std::int64_t n = data.shape(0);
            py::gil_scoped_release release;
            pgrid::shuffle4(in, n, dst, chosen);
        },
        py::arg("data"), py::arg("out"), py::arg("isa") = "",
        "HDF5's byte shuffle of float32 data (n,) into out (4n,) uint8.");

    m.def(
        "unshuffle4",
        [](const py::array& data, py::array out, const std::string& isa) {
            require<std::uint8_t>(data, "data", {-1});
            if (data.shape(0) % 4 != 0) value_error("data must hold 4 bytes per element");
            require<float>(out, "out", {data.shape(0) / 4}, true);
            const pgrid::Isa chosen = isa_from(isa);
            const auto* in = static_cast<const std::uint8_t*>(data.data());
            float* dst = static_cast<float*>(out.mutable_data());
            const std::int64_t n = out.shape(0);
            py::gil_scoped_release release;
            pgrid::unshuffle4(in, n, dst, chosen);
        },
        py::arg("data"), py::arg("out"), py::arg("isa") = "",
        "Inverse of shuffle4: HDF5-shuffled bytes (4n,) uint8 into float32 out (n,).");

    // ---------------------------------------------------------------- Lennard-Jones grids
    m.def(
        "lj_energy_grid",
        [](const py::array& positions, const py::array& sigmas, const py::array& epsilons,
           const py::object& lattice, const py::array& origin, const py::array& steps,
           const py::object& cutoff, const py::object& max_energy, py::array out,
           const py::object& threads, const std::string& isa) {
            pgrid::Options opt;
            opt.threads = threads_arg(threads);
            require<double>(positions, "positions", {-1, 3});
            const py::ssize_t m = positions.shape(0);
            require<double>(sigmas, "sigmas", {m});
            require<double>(epsilons, "epsilons", {m});
            require<double>(origin, "origin", {3});
            require<double>(steps, "steps", {3, 3});
            require<float>(out, "out", {-1, -1, -1}, true);
            pgrid::EnergyInput in;
            in.positions = static_cast<const double*>(positions.data());
            in.sigmas = static_cast<const double*>(sigmas.data());
            in.epsilons = static_cast<const double*>(epsilons.data());
            in.n_atoms = m;
            if (!lattice.is_none()) {
                const auto arr = py::reinterpret_borrow<py::array>(lattice);
                require<double>(arr, "lattice", {3, 3});
                in.lattice = static_cast<const double*>(arr.data());
            }
            const auto* o = static_cast<const double*>(origin.data());
            const auto* st = static_cast<const double*>(steps.data());
            for (int d = 0; d < 3; ++d) {
                in.origin[d] = o[d];
                for (int e = 0; e < 3; ++e) in.steps[d][e] = st[3 * d + e];
                if (out.shape(d) < 1 || out.shape(d) > pgrid::kMaxAxisVoxels)
                    value_error("out has shape ", shape_str(out),
                                ": every extent must be between 1 and ", pgrid::kMaxAxisVoxels);
                in.shape[d] = static_cast<int>(out.shape(d));
            }
            in.cutoff = float_arg(cutoff, "cutoff");
            in.max_energy = float_arg(max_energy, "max_energy");
            opt.isa = isa_from(isa);
            float* dst = static_cast<float*>(out.mutable_data());
            py::gil_scoped_release release;
            pgrid::lj_energy_grid(in, dst, opt);
        },
        py::arg("positions"), py::arg("sigmas"), py::arg("epsilons"), py::arg("lattice"),
        py::arg("origin"), py::arg("steps"), py::arg("cutoff"), py::arg("max_energy"),
        py::arg("out"), py::arg("threads") = 0, py::arg("isa") = "",
        "Fill out (nx, ny, nz) float32 with Lennard-Jones energies in K (see pgrid/energy.hpp).");
    m.attr("LJ_MAX_IMAGES") = pgrid::kMaxLjImages;

    m.def("supported_isas", [] {
        std::vector<std::string> out;
        for (pgrid::Isa s : pgrid::supported_isas()) out.emplace_back(pgrid::isa_name(s));
        return out;
    });
    m.def("best_isa", [] { return std::string(pgrid::isa_name(pgrid::best_isa())); });
    m.def("hardware_threads", &pgrid::hardware_threads);
    m.def(
        "triclinic_quadrature_order",
        [](const py::object& h) {
            return pgrid::triclinic_quadrature_order(float_arg(h, "h_over_sigma"));
        },
        py::arg("h_over_sigma"));
    m.def("build_info", [] {
        py::dict d;
        d["version"] = PGRID_VERSION;
#if defined(__clang__)
        d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
        d["compiler"] = std::string("gcc ") + __VERSION__;
#else
        d["compiler"] = "unknown";
#endif
        d["flags"] = PGRID_CXX_FLAGS;
        d["trunc_sigmas"] = pgrid::kTruncSigmas;
        return d;
    });
    m.attr("TRUNC_SIGMAS") = pgrid::kTruncSigmas;
    // The input domain (pgrid/grid.hpp): validate() rejects anything outside it.
    m.attr("MIN_SIGMA") = pgrid::kMinSigma;
    m.attr("MAX_SIGMA") = pgrid::kMaxSigma;
    m.attr("MAX_DISTANCE") = pgrid::kMaxDistance;
    m.attr("MAX_WEIGHT_SUM") = pgrid::kMaxWeightSum;
    m.attr("MAX_AXIS_VOXELS") = pgrid::kMaxAxisVoxels;
    m.attr("MAX_THREADS") = pgrid::kMaxThreads;
    m.attr("__version__") = PGRID_VERSION;
}
