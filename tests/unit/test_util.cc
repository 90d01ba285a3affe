#include "tests/unit/test_util.h"

namespace superweight::testing {

std::string TestData(const std::string& rel) {
  return std::string(SUPERWEIGHT_TESTDATA) + "/" + rel;
}

std::string EvalDataDir() { return SUPERWEIGHT_EVAL_DATA; }

}  // namespace superweight::testing
