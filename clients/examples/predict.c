/* SPDX-License-Identifier: MIT */
/*
 * Example for libhdqt-client: print hdqtd's status line and classify one
 * feature vector given as 166 comma-separated numbers.
 *
 *   cc predict.c $(pkg-config --cflags --libs libhdqt-client) -o predict
 *   ./predict "$(head -1 features.csv)"
 */
#include <stdio.h>
#include <stdlib.h>

#include <hdqt_client.h>

int main(int argc, char **argv)
{
	hdqt_client *c;
	if (hdqt_client_connect(&c, NULL, 10000) < 0) {
		fprintf(stderr, "cannot connect to %s\n", hdqt_client_default_socket());
		return 1;
	}
	cJSON *st;
	if (hdqt_client_call(c, "status", NULL, &st) < 0) {
		fprintf(stderr, "status: %s\n", hdqt_client_errmsg(c));
		hdqt_client_close(c);
		return 1;
	}
	const cJSON *mv = cJSON_GetObjectItemCaseSensitive(st, "model_version");
	if (cJSON_IsNumber(mv))
		printf("model version: %d\n", mv->valueint);
	else
		printf("model version: none yet\n");
	cJSON_Delete(st);
	if (argc > 1) {
		cJSON *params = cJSON_CreateObject(), *f = cJSON_AddArrayToObject(params, "features");
		for (char *p = argv[1], *end; *p; p = end) {
			double v = strtod(p, &end);
			if (end == p)
				break;
			cJSON_AddItemToArray(f, cJSON_CreateNumber(v));
			while (*end == ',' || *end == ' ')
				end++;
		}
		cJSON *r;
		if (hdqt_client_call(c, "predict", params, &r) < 0) {
			fprintf(stderr, "predict: %s\n", hdqt_client_errmsg(c));
			hdqt_client_close(c);
			return 1;
		}
		const cJSON *cls = cJSON_GetObjectItemCaseSensitive(r, "class");
		const cJSON *conf = cJSON_GetObjectItemCaseSensitive(r, "confidence");
		printf("%s (%.1f%%)\n", cJSON_IsString(cls) ? cls->valuestring : "?",
		       cJSON_IsNumber(conf) ? 100 * conf->valuedouble : 0.0);
		cJSON_Delete(r);
	}
	hdqt_client_close(c);
	return 0;
}
