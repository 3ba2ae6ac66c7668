# The xsimd versions moe is built and tested with: 8.1 (Debian 12's) to 14
# (vcpkg's and Conan Center's; 13.2 and 14.3 tested). xsimd's own version file
# accepts only its major version, so a range cannot go in find_package; this
# checks it after, naming what was found and what is wanted.
set(MOE_XSIMD_MIN 8.1)
set(MOE_XSIMD_BELOW 15)

function(moe_check_xsimd_version)
  if(NOT DEFINED xsimd_VERSION)
    message(WARNING "moe: xsimd found without a version; moe is tested with xsimd ${MOE_XSIMD_MIN} to "
                    "${MOE_XSIMD_BELOW} (exclusive)")
  elseif(xsimd_VERSION VERSION_LESS MOE_XSIMD_MIN OR NOT xsimd_VERSION VERSION_LESS MOE_XSIMD_BELOW)
    message(FATAL_ERROR "moe: found xsimd ${xsimd_VERSION} (${xsimd_DIR}); moe needs xsimd ${MOE_XSIMD_MIN} or newer "
                        "and older than ${MOE_XSIMD_BELOW} (tested: 8.1, 13.2, 14.3)")
  endif()
endfunction()
