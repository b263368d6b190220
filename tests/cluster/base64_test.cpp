#include "cluster/base64.hpp"

#include <gtest/gtest.h>

#include <string>

#include "gpucluster/model/errors.hpp"

namespace gpucluster {
namespace {

TEST(Base64, Rfc4648Vectors) {
  // RFC 4648 §10.
  const std::pair<const char*, const char*> vectors[] = {{"", ""},
                                                         {"f", "Zg=="},
                                                         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"},
                                                         {"foob", "Zm9vYg=="},
                                                         {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(base64_encode(plain), encoded) << plain;
    EXPECT_EQ(base64_decode(encoded, "key"), plain) << encoded;
  }
}

TEST(Base64, EtcdKeyAsTheGatewayWritesIt) {
  // Taken from etcd 3.4's /v3/kv/range answer for the key /gpucluster/nodes/a.
  EXPECT_EQ(base64_decode("L2dwdWNsdXN0ZXIvbm9kZXMvYQ==", "kv.key"), "/gpucluster/nodes/a");
  EXPECT_EQ(base64_encode("/gpucluster/nodes/a"), "L2dwdWNsdXN0ZXIvbm9kZXMvYQ==");
}

TEST(Base64, EveryByteValueRoundTrips) {
  std::string bytes;
  for (int i = 0; i < 256; ++i) bytes += static_cast<char>(i);
  for (std::size_t length = 0; length <= bytes.size(); length += 37) {
    const std::string part = bytes.substr(bytes.size() - length);
    EXPECT_EQ(base64_decode(base64_encode(part), "value"), part) << length;
  }
  EXPECT_EQ(base64_encode(std::string("\xff\xfe\xfd", 3)), "//79");
}

void expect_rejected(const std::string& text, const std::string& rule_part) {
  try {
    base64_decode(text, "kv.value");
    ADD_FAILURE() << "accepted " << text;
  } catch (const InputError& error) {
    EXPECT_EQ(error.field(), "kv.value");
    EXPECT_EQ(error.value(), text);
    EXPECT_NE(error.rule().find(rule_part), std::string::npos) << error.rule();
  }
}

TEST(Base64, MalformedInputIsATypedErrorNamingTheField) {
  expect_rejected("Zm9", "multiple of 4");
  expect_rejected("Zm9v!A==", "character 4");
  expect_rejected("Zg=v", "character 2");
  expect_rejected("Z===", "character 1");
  expect_rejected("=Zm9", "character 0");
  expect_rejected("Zh==", "canonical");  // 'h' leaves non-zero bits under the padding
  expect_rejected("Zm9=", "canonical");
  expect_rejected("Zm 9", "character 2");
}

}  // namespace
}  // namespace gpucluster
