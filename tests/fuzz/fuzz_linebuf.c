/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the framing of proto/hdqt_proto.c.  The input is a byte
 * stream cut into chunks of fuzzer-chosen sizes; every chunk is fed with
 * hdqt_linebuf_feed and the complete lines drained with hdqt_linebuf_next,
 * as the daemon's read callback does.  A reference model (the same stream
 * split at '\n' by hand) checks every line returned, the partial count, and
 * that HDQT_EFULL is returned exactly when a line would exceed the limit,
 * appending nothing or only the complete lines before the oversized one.  Any disagreement aborts (a finding).
 *
 * Input: byte 0-1 the line limit (2..1025), then records of one length byte
 * (chunk of 0..255 bytes) followed by the chunk.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hdqt.h"
#include "hdqt_proto.h"

#define CHECK(c)                                                                               \
	do {                                                                                   \
		if (!(c)) {                                                                    \
			fprintf(stderr, "fuzz_linebuf: check failed: %s (line %d)\n", #c, __LINE__); \
			abort();                                                               \
		}                                                                              \
	} while (0)

/* Would feeding data (n bytes) after a held partial line of held bytes make a
 * line longer than max?  Then *keep is the length of data's complete lines
 * before the oversized one (0 when the held line itself overflows). */
static int would_overflow(size_t held, const uint8_t *data, size_t n, size_t max, size_t *keep)
{
	size_t run = held;
	*keep = 0;
	for (size_t i = 0; i < n; i++) {
		if (data[i] == '\n') {
			run = 0;
			*keep = i + 1;
			continue;
		}
		if (++run > max)
			return 1;
	}
	return 0;
}

/* Drain every complete line and compare it with the reference. */
static void drain(hdqt_linebuf *lb, uint8_t *ref, size_t *rlen, size_t max)
{
	for (;;) {
		size_t len = (size_t)-1;
		char *line = hdqt_linebuf_next(lb, &len);
		uint8_t *nl = memchr(ref, '\n', *rlen);
		if (!line) {
			CHECK(nl == NULL);
			break;
		}
		CHECK(nl != NULL);
		size_t l = (size_t)(nl - ref);
		size_t want = l > 0 && ref[l - 1] == '\r' ? l - 1 : l;
		CHECK(len == want);
		CHECK(len <= max);
		CHECK(memcmp(line, ref, want) == 0);
		CHECK(line[len] == '\0');
		memmove(ref, nl + 1, *rlen - l - 1);
		*rlen -= l + 1;
		CHECK(hdqt_linebuf_partial(lb) == *rlen);
	}
	/* Asking again without feeding finds nothing new. */
	CHECK(hdqt_linebuf_next(lb, NULL) == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	size_t max = 2 + ((size_t)data[0] | (size_t)(data[1] & 3) << 8);
	data += 2;
	size -= 2;
	hdqt_linebuf lb;
	CHECK(hdqt_linebuf_init(&lb, max) == 0);
	CHECK(hdqt_linebuf_init(&lb, 1) == HDQT_EINVAL);
	CHECK(hdqt_linebuf_init(&lb, max) == 0);
	/* ref holds the bytes accepted and not yet returned as lines. */
	uint8_t *ref = malloc(size + 1);
	size_t rlen = 0;
	CHECK(ref);
	size_t off = 0;
	while (off < size) {
		size_t n = data[off++];
		if (n > size - off)
			n = size - off;
		const uint8_t *chunk = data + off;
		off += n;
		size_t keep;
		int full = would_overflow(rlen, chunk, n, max, &keep);
		int rc = hdqt_linebuf_feed(&lb, (const char *)chunk, n);
		if (full) {
			CHECK(rc == HDQT_EFULL);
			/* Either nothing was appended, or (so that they can still be
			 * answered) the complete lines before the oversized one. */
			size_t part = hdqt_linebuf_partial(&lb);
			CHECK(part == rlen || part == rlen + keep);
			memcpy(ref + rlen, chunk, part - rlen);
			rlen = part;
			drain(&lb, ref, &rlen, max);
			break; /* the daemon closes the connection: no resynchronisation */
		}
		CHECK(rc == 0);
		memcpy(ref + rlen, chunk, n);
		rlen += n;
		CHECK(hdqt_linebuf_partial(&lb) == rlen);
		drain(&lb, ref, &rlen, max);
	}
	CHECK(hdqt_linebuf_feed(&lb, NULL, 1) == HDQT_EINVAL);
	hdqt_linebuf_free(&lb);
	free(ref);
	return 0;
}
