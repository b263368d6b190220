# Installs the build in BUILD_DIR into a temporary prefix, then configures, builds and
# runs tests/install/consumer (examples/library_example.cpp) against it with
# find_package(gpucluster). Run by CTest (install_find_package):
#   cmake -DBUILD_DIR=... -DSOURCE_DIR=.../tests/install -DGENERATOR=... -DCXX_COMPILER=... -P run_install_test.cmake
set(work ${BUILD_DIR}/install-test)
file(REMOVE_RECURSE ${work})
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${work}/prefix)
foreach(expected include/gpucluster/node/manager.hpp include/gpucluster/model/fields.hpp
                 lib/cmake/gpucluster/gpucluster-config.cmake bin/gpucluster)
  if(NOT EXISTS ${work}/prefix/${expected})
    message(FATAL_ERROR "not installed: ${expected}")
  endif()
endforeach()
# Internal headers stay out of the installed tree.
foreach(internal telemetry/ring_buffer.hpp agent/http_server.hpp model/text.hpp)
  if(EXISTS ${work}/prefix/include/gpucluster/${internal})
    message(FATAL_ERROR "internal header installed: ${internal}")
  endif()
endforeach()
get_filename_component(example ${SOURCE_DIR}/../../examples/library_example.cpp ABSOLUTE)
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/consumer -B ${work}/consumer -G ${GENERATOR}
    -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_PREFIX_PATH=${work}/prefix -DCMAKE_BUILD_TYPE=Release
    -DEXAMPLE_SOURCE=${example})
run(${CMAKE_COMMAND} --build ${work}/consumer)
run(${work}/consumer/consumer)
if(NOT last_output MATCHES "best device: " OR NOT last_output MATCHES "unassigned: [0-9]+ \\(never dropped")
  message(FATAL_ERROR "the consumer ran but printed:\n${last_output}")
endif()
message(STATUS "find_package(gpucluster) consumer built and ran:\n${last_output}")
