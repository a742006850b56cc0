/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: daemon/conf.c.  The input is written to a temporary
 * file and loaded with hdqtd_config_load over the defaults (as --config and
 * SIGHUP do), then checked with hdqtd_config_check; every input line is
 * also given to hdqtd_config_set the way main.c splits --set S.K=V.
 * Property: whatever configuration results, config.get's JSON
 * (hdqtd_config_json) set back key by key gives the same configuration.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"

#define CHECK(c)                                                                               \
	do {                                                                                   \
		if (!(c)) {                                                                    \
			fprintf(stderr, "fuzz_config: check failed: %s (line %d)\n", #c,         \
				__LINE__);                                                     \
			abort();                                                               \
		}                                                                              \
	} while (0)

static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	snprintf(path, sizeof(path), "/tmp/hdqt-fuzz-config-%d.ini", (int)getpid());
	return 0;
}

/* config.get's JSON, set back into a fresh configuration, must give the same
 * JSON (numbers beyond 2^53, which a double cannot carry exactly, excepted). */
static void round_trip(const hdqtd_config *c)
{
	cJSON *j = hdqtd_config_json(c);
	CHECK(j);
	hdqtd_config back;
	hdqtd_config_default(&back);
	char skipped[16][2][64];
	int n_skipped = 0;
	const cJSON *sec;
	cJSON_ArrayForEach(sec, j) {
		const cJSON *kv;
		cJSON_ArrayForEach(kv, sec) {
			char val[4200], err[512];
			if (cJSON_IsString(kv)) {
				if (!*kv->valuestring)
					continue; /* "" is the default of the keys that allow it */
				snprintf(val, sizeof(val), "%s", kv->valuestring);
			} else if (cJSON_IsBool(kv)) {
				snprintf(val, sizeof(val), "%s", cJSON_IsTrue(kv) ? "yes" : "no");
			} else {
				CHECK(cJSON_IsNumber(kv));
				if (fabs(kv->valuedouble) > 9007199254740992.0) {
					CHECK(n_skipped < 16);
					snprintf(skipped[n_skipped][0], 64, "%s", sec->string);
					snprintf(skipped[n_skipped][1], 64, "%s", kv->string);
					n_skipped++;
					continue;
				}
				snprintf(val, sizeof(val), "%.17g", kv->valuedouble);
			}
			if (hdqtd_config_set(&back, sec->string, kv->string, val, err, sizeof(err)) < 0) {
				fprintf(stderr, "fuzz_config: config.get gives %s.%s = \"%s\", which "
					"does not set back: %s\n", sec->string, kv->string, val, err);
				abort();
			}
		}
	}
	cJSON *j2 = hdqtd_config_json(&back);
	CHECK(j2);
	for (int i = 0; i < n_skipped; i++) {
		cJSON_DeleteItemFromObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, skipped[i][0]),
							skipped[i][1]);
		cJSON_DeleteItemFromObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(j2, skipped[i][0]),
							skipped[i][1]);
	}
	char *s1 = cJSON_PrintUnformatted(j), *s2 = cJSON_PrintUnformatted(j2);
	CHECK(s1 && s2);
	if (strcmp(s1, s2) != 0) {
		fprintf(stderr, "fuzz_config: round trip differs:\n%s\n%s\n", s1, s2);
		abort();
	}
	free(s1);
	free(s2);
	cJSON_Delete(j);
	cJSON_Delete(j2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	FILE *f = fopen(path, "wb");
	CHECK(f);
	CHECK(fwrite(data, 1, size, f) == size);
	CHECK(fclose(f) == 0);
	hdqtd_config c;
	hdqtd_config_default(&c);
	char err[512];
	err[0] = '\0';
	int rc = hdqtd_config_load(&c, path, err, sizeof(err));
	CHECK(rc == 0 || (rc < 0 && err[0]));
	if (rc == 0 && hdqtd_config_check(&c, err, sizeof(err)) == 0)
		round_trip(&c);
	unlink(path);

	/* Lines as --set SECTION.KEY=VALUE. */
	hdqtd_config_default(&c);
	char *buf = malloc(size + 1);
	CHECK(buf);
	memcpy(buf, data, size);
	buf[size] = '\0';
	char *save = NULL;
	for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *dot = strchr(line, '.'), *eq = strchr(line, '=');
		if (!dot || !eq || dot > eq)
			continue;
		*dot = *eq = '\0';
		err[0] = '\0';
		rc = hdqtd_config_set(&c, line, dot + 1, eq + 1, err, sizeof(err));
		CHECK(rc == 0 || (rc < 0 && err[0]));
	}
	free(buf);
	if (hdqtd_config_check(&c, err, sizeof(err)) == 0)
		round_trip(&c);
	return 0;
}
