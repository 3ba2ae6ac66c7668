"""Conan 2 recipe for moe, a header-only C++20 library.

The package carries moe's own CMake package files (share/cmake/moe), so
`find_package(moe)` and the target `moe::moe` behave exactly as with a plain
`cmake --install`; Conan is told not to generate a second config for it.
"""
import os
import re

from conan import ConanFile
from conan.tools.cmake import CMake, CMakeDeps, CMakeToolchain, cmake_layout
from conan.tools.files import load


class MoeConan(ConanFile):
    name = "moe"
    description = "Header-only C++20 Mixture-of-Experts layers"
    license = "MIT"
    topics = ("mixture-of-experts", "moe", "header-only", "machine-learning")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    exports_sources = "CMakeLists.txt", "include/*", "cmake/*", "LICENSE"
    no_copy_source = True

    def set_version(self):
        text = load(self, os.path.join(self.recipe_folder, "include", "moe", "version.hpp"))
        parts = [re.search(rf"#define MOE_VERSION_{p} (\d+)", text).group(1) for p in ("MAJOR", "MINOR", "PATCH")]
        self.version = ".".join(parts)

    def requirements(self):
        self.requires("eigen/3.4.0", transitive_headers=True)
        # Tested with 8.1, 13.2 and 14.3 (and compiled against 9.0.1, 10.0, 11.2, 12.1.1).
        self.requires("xsimd/[>=8.1 <15]", transitive_headers=True)
        self.requires("nlohmann_json/[>=3.11 <4]", transitive_headers=True)

    def layout(self):
        cmake_layout(self)

    def generate(self):
        tc = CMakeToolchain(self)
        for option in ("MOE_BUILD_TESTS", "MOE_BUILD_EXAMPLES", "MOE_BUILD_BENCH", "MOE_NATIVE"):
            tc.cache_variables[option] = False
        tc.cache_variables["MOE_INSTALL"] = True
        tc.generate()
        CMakeDeps(self).generate()

    def package(self):
        cmake = CMake(self)
        cmake.configure()
        cmake.install()

    def package_id(self):
        self.info.clear()  # header-only: one package for every configuration

    def package_info(self):
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        # Consumers use the package's own moeConfig.cmake (found through builddirs).
        self.cpp_info.set_property("cmake_find_mode", "none")
        self.cpp_info.builddirs = [os.path.join("share", "cmake", "moe")]
