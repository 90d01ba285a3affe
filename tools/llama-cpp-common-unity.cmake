# Included into llama.cpp's configure by tools/setup-bench.sh (CMAKE_PROJECT_INCLUDE): its
# llama-common library (argument parsing, chat templates and parsers, JSON; what llama-quantize
# and llama-imatrix link) compiled as a unity build, as llama.cpp already compiles its llama
# library: about half that library's compile time (426 against 225 CPU seconds on a 2-core
# Zen 3), a fifth of the whole build. json.cpp declares a name the chat parser declares
# otherwise, so it stays on its own. Nothing here reaches ggml, the code that is measured.
get_property(superweight_deferred GLOBAL PROPERTY superweight_llama_common_unity)
if(NOT superweight_deferred)  # included after each project(): llama.cpp's and ggml's
  set_property(GLOBAL PROPERTY superweight_llama_common_unity TRUE)
  function(superweight_llama_common_unity)
    set_target_properties(llama-common PROPERTIES UNITY_BUILD ON UNITY_BUILD_BATCH_SIZE 16)
    set_source_files_properties(${CMAKE_SOURCE_DIR}/common/json.cpp TARGET_DIRECTORY llama-common
      PROPERTIES SKIP_UNITY_BUILD_INCLUSION ON)
  endfunction()
  # Deferred to the end of the top-level directory, when the target exists.
  cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL superweight_llama_common_unity)
endif()
