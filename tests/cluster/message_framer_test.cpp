#include "cluster/message_framer.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace gpucluster {
namespace {

std::vector<std::string> feed_all(MessageFramer& framer, const std::vector<std::string>& pieces) {
  std::vector<std::string> messages;
  for (const auto& piece : pieces) {
    framer.feed(piece, [&](std::string_view message) {
      messages.emplace_back(message);
      return true;
    });
  }
  return messages;
}

TEST(MessageFramer, JsonObjectsAcrossAndWithinPieces) {
  MessageFramer framer(StreamFraming::json_objects, 1024);
  const auto messages = feed_all(framer, {"{\"result\":{\"a\":", "1}}\n{\"b\":[1,{\"c\":2}]}{\"d\"", ":3}\n\n  "});
  ASSERT_EQ(messages.size(), 3u);
  EXPECT_EQ(messages[0], "{\"result\":{\"a\":1}}");
  EXPECT_EQ(messages[1], "{\"b\":[1,{\"c\":2}]}");
  EXPECT_EQ(messages[2], "{\"d\":3}");
  EXPECT_EQ(framer.pending_bytes(), 0u);
}

TEST(MessageFramer, BracesInsideStringsDoNotEndAnObject) {
  MessageFramer framer(StreamFraming::json_objects, 1024);
  const auto messages = feed_all(framer, {R"({"s":"}{\"","t":"\\"})", R"({"u":"]"})"});
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0], R"({"s":"}{\"","t":"\\"})");
  EXPECT_EQ(messages[1], R"({"u":"]"})");
}

TEST(MessageFramer, OneByteAtATime) {
  const std::string stream = "{\"a\":\"x\\\"}\"}\n{\"b\":{}}\n";
  MessageFramer framer(StreamFraming::json_objects, 1024);
  std::vector<std::string> pieces;
  for (char c : stream) pieces.emplace_back(1, c);
  const auto messages = feed_all(framer, pieces);
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0], "{\"a\":\"x\\\"}\"}");
  EXPECT_EQ(messages[1], "{\"b\":{}}");
}

TEST(MessageFramer, IncompleteMessageIsHeldBack) {
  MessageFramer framer(StreamFraming::json_objects, 1024);
  EXPECT_TRUE(feed_all(framer, {"{\"a\":{\"b\":1}"}).empty());
  EXPECT_EQ(framer.pending_bytes(), 12u);
}

TEST(MessageFramer, MessageOverTheBoundThrowsEvenBeforeItIsComplete) {
  MessageFramer complete(StreamFraming::json_objects, 10);
  EXPECT_THROW(feed_all(complete, {"{\"a\":\"0123456789\"}"}), StreamFramingError);
  MessageFramer partial(StreamFraming::json_objects, 10);
  EXPECT_THROW(feed_all(partial, {"{\"a\":\"0123", "456789"}), StreamFramingError);
  MessageFramer lines(StreamFraming::lines, 4);
  EXPECT_THROW(feed_all(lines, {"12345"}), StreamFramingError);
  // Exactly at the bound is fine.
  MessageFramer exact(StreamFraming::json_objects, 9);
  EXPECT_EQ(feed_all(exact, {"{\"a\":123}"}).size(), 1u);
}

TEST(MessageFramer, BytesThatDoNotStartAnObjectThrow) {
  MessageFramer framer(StreamFraming::json_objects, 1024);
  EXPECT_THROW(feed_all(framer, {"{}\nnull"}), StreamFramingError);
}

TEST(MessageFramer, LinesDropCarriageReturnsAndEmptyLines) {
  MessageFramer framer(StreamFraming::lines, 1024);
  const auto messages = feed_all(framer, {"one\r\ntw", "o\n\n", "three"});
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0], "one");
  EXPECT_EQ(messages[1], "two");
  EXPECT_EQ(framer.pending_bytes(), 5u);
}

TEST(MessageFramer, HandlerStopsTheFeed) {
  MessageFramer framer(StreamFraming::json_objects, 1024);
  int seen = 0;
  EXPECT_FALSE(framer.feed("{}{}{}", [&](std::string_view) { return ++seen < 2; }));
  EXPECT_EQ(seen, 2);
}

TEST(MessageFramer, ZeroBoundIsRejected) {
  EXPECT_THROW(MessageFramer(StreamFraming::lines, 0), InputError);
}

}  // namespace
}  // namespace gpucluster
