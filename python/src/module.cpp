// gpucluster._native: the C++ core as a Python extension module. The public
// face is the gpucluster package (python/gpucluster/), which re-exports these
// names and adds gpucluster.exo_compat.

#include "common.hpp"

PYBIND11_MODULE(_native, m) {
  namespace gp = gpucluster::python;
  m.doc() = "gpucluster's C++ core (use the gpucluster package, not this module directly)";
  gp::register_errors(m);
  gp::bind_types(m);
  gp::bind_manager(m);
  gp::bind_compat(m);
  gp::bind_protocol(m);
  // Always true now that the protocol is part of every build; kept for code that checks it.
  m.attr("HAVE_PROTOCOL") = true;
}
