# Overlay port for moe, built from the checkout that holds this folder:
#   vcpkg install moe --overlay-ports=<repo>/cmake/vcpkg/ports
# For a registry, replace SOURCE_PATH with vcpkg_from_github(...).
set(VCPKG_BUILD_TYPE release)  # header-only port
get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../../../.." ABSOLUTE)

vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    -DMOE_BUILD_TESTS=OFF
    -DMOE_BUILD_EXAMPLES=OFF
    -DMOE_BUILD_BENCH=OFF
    -DMOE_NATIVE=OFF
    -DMOE_INSTALL=ON)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(PACKAGE_NAME moe CONFIG_PATH share/cmake/moe)
file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/lib" "${CURRENT_PACKAGES_DIR}/debug")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
