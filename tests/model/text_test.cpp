// model/text.hpp: the one home for a float's shortest decimal, UTF-8 checks,
// PCI bus ids and bounded reads of /proc and /sys files.
#include "model/text.hpp"

#include <gtest/gtest.h>

#include <unistd.h>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

namespace gpucluster::text {
namespace {

TEST(Text, ShortestDecimalOfAFloat) {
  EXPECT_EQ(shortest_decimal(41.3f), 41.3);
  EXPECT_EQ(shortest_decimal(1837.3f), 1837.3);
  EXPECT_EQ(shortest_decimal(0.0f), 0.0);
  EXPECT_EQ(static_cast<float>(shortest_decimal(65.123456789f)), 65.123456789f);  // narrows back to the same float
  EXPECT_TRUE(std::isnan(shortest_decimal(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(shortest_decimal(std::numeric_limits<float>::infinity()), std::numeric_limits<double>::infinity());
  EXPECT_EQ(static_cast<float>(shortest_decimal(std::numeric_limits<float>::denorm_min())),
            std::numeric_limits<float>::denorm_min());
}

TEST(Text, Utf8Checks) {
  EXPECT_TRUE(
      is_valid_utf8("H100 \xC2\xB0"
                    "C \xE2\x82\xAC \xF0\x9F\x98\x80"));
  EXPECT_FALSE(is_valid_utf8("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(is_valid_utf8("\xED\xA0\x80"));      // a surrogate
  EXPECT_FALSE(is_valid_utf8("\xF4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(is_valid_utf8("\xE2\x82"));          // cut short
  EXPECT_EQ(utf8_sequence_length("a\xE2\x82\xAC", 1), 3U);
  EXPECT_EQ(printable("ok\x1B[31m\xFF"), "ok\\x1B[31m\\xFF");
  EXPECT_EQ(printable(std::string(100, 'a'), 8), "aaaaaaaa...");
}

TEST(Text, PciBusIds) {
  EXPECT_EQ(normalise_pci_bus_id("00000000:65:00.0"), "0000:65:00.0");
  EXPECT_EQ(normalise_pci_bus_id("0000:C1:1F.7"), "0000:c1:1f.7");
  EXPECT_EQ(normalise_pci_bus_id("0000:65:20.0"), std::nullopt);  // device > 0x1f
  EXPECT_EQ(normalise_pci_bus_id("0000:65:00.8"), std::nullopt);  // function > 7
  EXPECT_EQ(normalise_pci_bus_id("GPU-0"), std::nullopt);
  EXPECT_EQ(normalise_pci_bus_id(""), std::nullopt);
  EXPECT_EQ(pci_bus_id(1, 0x65, 3, 1), "0001:65:03.1");
}

TEST(Text, BoundedFileReadsAndStrictNumbers) {
  const auto path = std::filesystem::temp_directory_path() / ("gpucluster-text-test-" + std::to_string(::getpid()));
  {
    std::ofstream out(path);
    out << " 42\n";
  }
  EXPECT_EQ(read_text_file(path, 16), " 42\n");
  EXPECT_EQ(read_text_file(path, 3), std::nullopt);  // larger than the bound
  EXPECT_EQ(read_text_file(path / "missing", 16), std::nullopt);
  std::filesystem::remove(path);
  EXPECT_EQ(parse_number<unsigned>(" 42\n"), 42U);
  EXPECT_EQ(parse_number<unsigned>("-1"), std::nullopt);
  EXPECT_EQ(parse_number<unsigned>("42x"), std::nullopt);
  EXPECT_EQ(parse_number<double>("1e400"), std::nullopt);
  EXPECT_EQ(trim("\t a b \n"), "a b");
}

}  // namespace
}  // namespace gpucluster::text
