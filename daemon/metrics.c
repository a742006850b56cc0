/* SPDX-License-Identifier: MIT */
/*
 * Daemon metrics (metrics.h).  Fixed-size tables: a client sending ten
 * thousand distinct unknown method names must not grow them, so method
 * names are those of the method table (anything else is "(unknown)") and
 * error codes past the table's size are counted under code 0.
 */
#include <string.h>

#include "metrics.h"
#include "trainer.h"

/* Seconds.  Predictions take 0.05-5 ms (README's throughput table); rounds
 * from under a second to minutes. */
static const double predict_le[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
				    0.01,   0.025,   0.05,   0.1,   0.25,   1.0};
static const double round_le[] = {0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800};

void hdqtd_metrics_init(hdqtd_metrics *m)
{
	memset(m, 0, sizeof(*m));
	m->predict_seconds.le = predict_le;
	m->predict_seconds.n = (int)(sizeof(predict_le) / sizeof(predict_le[0]));
	m->round_seconds.le = round_le;
	m->round_seconds.n = (int)(sizeof(round_le) / sizeof(round_le[0]));
	_Static_assert(sizeof(predict_le) / sizeof(double) <= HDQTD_METRICS_BUCKETS, "buckets");
	_Static_assert(sizeof(round_le) / sizeof(double) <= HDQTD_METRICS_BUCKETS, "buckets");
}

static hdqtd_method_count *slot(hdqtd_metrics *m, const char *method)
{
	const char *name = method ? method : "(invalid)";
	for (int i = 0; i < m->n_methods; i++)
		if (m->m[i].name == name || strcmp(m->m[i].name, name) == 0)
			return &m->m[i];
	if (m->n_methods == HDQTD_METRICS_METHODS)
		return &m->m[HDQTD_METRICS_METHODS - 1]; /* defensive: the table has fewer methods */
	hdqtd_method_count *s = &m->m[m->n_methods++];
	s->name = name;
	return s;
}

void hdqtd_metrics_request(hdqtd_metrics *m, const char *method)
{
	slot(m, method)->requests++;
}

void hdqtd_metrics_reply(hdqtd_metrics *m, const char *method, const cJSON *resp)
{
	const cJSON *e = cJSON_GetObjectItemCaseSensitive(resp, "error");
	const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");
	if (!cJSON_IsNumber(code))
		return;
	hdqtd_method_count *s = slot(m, method);
	int c = (int)code->valuedouble, i;
	for (i = 0; i < s->n_codes && s->code[i] != c; i++)
		;
	if (i == s->n_codes) {
		if (s->n_codes == HDQTD_METRICS_CODES)
			i = 0, c = 0;
		else
			s->code[s->n_codes++] = c;
	}
	s->errors[i]++;
}

void hdqtd_metrics_observe(hdqtd_histogram *h, double v)
{
	int b = 0;
	while (b < h->n && v > h->le[b])
		b++;
	if (b < h->n)
		h->count[b]++;
	h->total++;
	h->sum += v;
}

static cJSON *histogram_json(const hdqtd_histogram *h)
{
	cJSON *o = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(o, "buckets");
	if (!a) {
		cJSON_Delete(o);
		return NULL;
	}
	uint64_t cum = 0;
	for (int b = 0; b < h->n; b++) {
		cum += h->count[b];
		cJSON *e = cJSON_CreateObject();
		if (!e)
			break;
		cJSON_AddNumberToObject(e, "le", h->le[b]);
		cJSON_AddNumberToObject(e, "count", (double)cum);
		cJSON_AddItemToArray(a, e);
	}
	cJSON_AddNumberToObject(o, "count", (double)h->total);
	cJSON_AddNumberToObject(o, "sum", h->sum);
	return o;
}

int hdqtd_metrics_json(const hdqtd_metrics *m, cJSON *o)
{
	cJSON *req = cJSON_AddArrayToObject(o, "requests");
	cJSON *rounds = cJSON_AddObjectToObject(o, "rounds");
	if (!req || !rounds)
		return -1;
	for (int i = 0; i < m->n_methods; i++) {
		const hdqtd_method_count *s = &m->m[i];
		cJSON *e = cJSON_CreateObject(), *errs = cJSON_AddArrayToObject(e, "errors");
		if (!errs) {
			cJSON_Delete(e);
			return -1;
		}
		cJSON_AddStringToObject(e, "method", s->name);
		cJSON_AddNumberToObject(e, "count", (double)s->requests);
		for (int k = 0; k < s->n_codes; k++) {
			cJSON *x = cJSON_CreateObject();
			if (!x)
				return -1;
			cJSON_AddNumberToObject(x, "code", s->code[k]);
			cJSON_AddNumberToObject(x, "count", (double)s->errors[k]);
			cJSON_AddItemToArray(errs, x);
		}
		cJSON_AddItemToArray(req, e);
	}
	for (int k = 0; k <= HDQTD_ROUND_EMPTY; k++)
		cJSON_AddNumberToObject(rounds, hdqtd_outcome_name(k), (double)m->rounds[k]);
	cJSON *rs = histogram_json(&m->round_seconds), *ps = histogram_json(&m->predict_seconds);
	if (!rs || !ps) {
		cJSON_Delete(rs);
		cJSON_Delete(ps);
		return -1;
	}
	cJSON_AddItemToObject(o, "round_duration_seconds", rs);
	cJSON_AddItemToObject(o, "predict_latency_seconds", ps);
	cJSON_AddNumberToObject(o, "predictions_total", (double)m->predictions);
	cJSON_AddNumberToObject(o, "predictions_unknown_total", (double)m->predictions_unknown);
	cJSON_AddNumberToObject(o, "samples_ingested_total", (double)m->samples_ingested);
	cJSON_AddNumberToObject(o, "samples_quarantined_total", (double)m->samples_quarantined);
	cJSON_AddNumberToObject(o, "connections_accepted_total", (double)m->connections_accepted);
	cJSON_AddNumberToObject(o, "exports_total", (double)m->exports);
	cJSON_AddNumberToObject(o, "imports_total", (double)m->imports);
	cJSON_AddNumberToObject(o, "backups_total", (double)m->backups);
	cJSON_AddNumberToObject(o, "busy_polls_total", (double)m->busy_polls);
	cJSON_AddNumberToObject(o, "busy_poll_hits_total", (double)m->busy_poll_hits);
	return 0;
}
