package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil/slapd"
)

// The monitoring files shipped in contrib/.
var (
	dashboardFile = filepath.Join("..", "..", "contrib", "grafana", "smtp-interceptor.json")
	alertsFile    = filepath.Join("..", "..", "contrib", "prometheus", "alerts.yml")
)

// monitoringExpr is one PromQL expression of the dashboard or of the
// alerting rules.
type monitoringExpr struct {
	// where names it in an error: panel and target, or alert.
	where string
	expr  string
	// shown are the labels its results are shown with: the legend's
	// {{label}} or the annotations' $labels.label.
	shown []string
	// needInstance: every selector must filter on the dashboard's
	// instance variable.
	needInstance bool
}

// grafanaPanel is what the checks read of a Grafana panel.
type grafanaPanel struct {
	ID          int    `json:"id"`
	Type        string `json:"type"`
	Title       string `json:"title"`
	Description string `json:"description"`
	Datasource  *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID        string `json:"refId"`
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}

// grafanaInput is an input that Grafana asks for at import.
type grafanaInput struct {
	Name     string `json:"name"`
	PluginID string `json:"pluginId"`
}

// grafanaDashboard is what the checks read of a Grafana dashboard.
type grafanaDashboard struct {
	UID           string         `json:"uid"`
	SchemaVersion int            `json:"schemaVersion"`
	Inputs        []grafanaInput `json:"__inputs"`
	Panels        []grafanaPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string `json:"name"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name       string `json:"name"`
			Expr       string `json:"expr"`
			TextFormat string `json:"textFormat"`
		} `json:"list"`
	} `json:"annotations"`
}

const dashboardDatasource = "${DS_PROMETHEUS}"

var legendLabelRE = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)

// dashboardExprs decodes a Grafana dashboard and returns the expressions
// of its panels' targets, annotations and template variables. It refuses
// invalid JSON, a dashboard without uid "smtp-interceptor", the
// ${DS_PROMETHEUS} input or the instance variable, and a panel without a
// title, or (rows aside) without a description, the ${DS_PROMETHEUS}
// data source or a target with an expression.
func dashboardExprs(data []byte) ([]monitoringExpr, error) {
	var d grafanaDashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	var errs []error
	if d.UID != "smtp-interceptor" {
		errs = append(errs, fmt.Errorf("dashboard: uid %q, want smtp-interceptor", d.UID))
	}
	if !slices.Contains(d.Inputs, grafanaInput{Name: "DS_PROMETHEUS", PluginID: "prometheus"}) {
		errs = append(errs, errors.New("dashboard: no __inputs DS_PROMETHEUS of plugin prometheus"))
	}
	var out []monitoringExpr
	instance := false
	for _, v := range d.Templating.List {
		if v.Name == "instance" {
			instance = true
		}
		if v.Definition != "" {
			out = append(out, monitoringExpr{where: "dashboard variable " + v.Name, expr: v.Definition})
		}
	}
	if !instance {
		errs = append(errs, errors.New("dashboard: no template variable instance"))
	}
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			out = append(out, monitoringExpr{where: "dashboard annotation " + a.Name, expr: a.Expr,
				shown: legendLabels(a.TextFormat), needInstance: true})
		}
	}
	var panels []grafanaPanel
	for _, p := range d.Panels {
		panels = append(panels, p)
		panels = append(panels, p.Panels...) // a collapsed row holds its panels
	}
	if len(panels) == 0 {
		errs = append(errs, errors.New("dashboard: no panels"))
	}
	for _, p := range panels {
		name := fmt.Sprintf("dashboard panel %d (%s)", p.ID, p.Title)
		if p.Title == "" {
			errs = append(errs, fmt.Errorf("%s: no title", name))
		}
		if p.Type == "row" {
			continue
		}
		if p.Description == "" {
			errs = append(errs, fmt.Errorf("%s: no description", name))
		}
		if p.Datasource == nil || p.Datasource.UID != dashboardDatasource {
			errs = append(errs, fmt.Errorf("%s: data source is not %s", name, dashboardDatasource))
		}
		n := 0
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				continue
			}
			n++
			out = append(out, monitoringExpr{where: name + " target " + tg.RefID, expr: tg.Expr,
				shown: legendLabels(tg.LegendFormat), needInstance: true})
		}
		if n == 0 {
			errs = append(errs, fmt.Errorf("%s: no target with an expression", name))
		}
	}
	return out, errors.Join(errs...)
}

func legendLabels(format string) []string {
	var out []string
	for _, m := range legendLabelRE.FindAllStringSubmatch(format, -1) {
		out = append(out, m[1])
	}
	return out
}

var (
	alertLineRE     = regexp.MustCompile(`^\s*- alert:\s*(\S+)\s*$`)
	exprLineRE      = regexp.MustCompile(`^(\s*)expr:\s*(.*)$`)
	annotationVarRE = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)
)

// ruleExprs returns the expression of each alert of a Prometheus rules
// file, with the labels its annotations use. It reads the layout
// alerts.yml is written in (promtool validates the YAML itself): each
// rule starts with "- alert: NAME", its expr is a block scalar ("expr: |")
// or fits on its line.
func ruleExprs(text string) ([]monitoringExpr, error) {
	var out []monitoringExpr
	var cur *monitoringExpr
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if m := alertLineRE.FindStringSubmatch(line); m != nil {
			out = append(out, monitoringExpr{where: "alert " + m[1]})
			cur = &out[len(out)-1]
			continue
		}
		if cur == nil {
			continue
		}
		for _, m := range annotationVarRE.FindAllStringSubmatch(line, -1) {
			cur.shown = append(cur.shown, m[1])
		}
		m := exprLineRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if v := strings.TrimSpace(m[2]); v != "|" && v != ">" && v != "|-" && v != ">-" {
			cur.expr = strings.Trim(v, `'"`)
			continue
		}
		var block []string
		for i+1 < len(lines) && (strings.TrimSpace(lines[i+1]) == "" || indent(lines[i+1]) > len(m[1])) {
			i++
			block = append(block, lines[i])
		}
		cur.expr = strings.TrimSpace(strings.Join(block, "\n"))
	}
	var errs []error
	for _, e := range out {
		if e.expr == "" {
			errs = append(errs, fmt.Errorf("%s: no expr", e.where))
		}
	}
	if len(out) == 0 {
		errs = append(errs, errors.New("rules: no alert"))
	}
	return out, errors.Join(errs...)
}

func indent(line string) int { return len(line) - len(strings.TrimLeft(line, " ")) }

var (
	metricNameRE = regexp.MustCompile(`\bsmtp_interceptor_[a-z0-9_]+`)
	// selectorRE is a metric name and its label matchers, if any.
	selectorRE = regexp.MustCompile(`\b(smtp_interceptor_[a-z0-9_]+)\b(\s*\{([^}]*)\})?`)
	matcherRE  = regexp.MustCompile(`^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$`)
	byRE       = regexp.MustCompile(`\bby\s*\(([^)]*)\)`)
)

// Labels that Prometheus adds to every series it scrapes.
var targetLabels = []string{"instance", "job"}

// series is one exported series: its family's name and type, and its
// labels.
type series struct {
	family string
	labels map[string]string
}

// resolveMetric finds the family that a name in an expression stands
// for: the family of that name, or the histogram whose _bucket, _sum or
// _count it is. bucket reports a _bucket series (labelled le).
func resolveMetric(name string, fams map[string]*dto.MetricFamily) (f *dto.MetricFamily, bucket bool) {
	if f := fams[name]; f != nil && len(f.GetMetric()) > 0 {
		return f, false
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		if f := fams[base]; f != nil && f.GetType() == dto.MetricType_HISTOGRAM && len(f.GetMetric()) > 0 {
			return f, suffix == "_bucket"
		}
	}
	return nil, false
}

func familySeries(f *dto.MetricFamily, bucket bool) []series {
	var out []series
	for _, m := range f.GetMetric() {
		s := series{family: f.GetName(), labels: map[string]string{}}
		for _, lp := range m.GetLabel() {
			s.labels[lp.GetName()] = lp.GetValue()
		}
		if bucket {
			s.labels["le"] = "+Inf"
		}
		out = append(out, s)
	}
	return out
}

// matcher is one label matcher of a selector.
type matcher struct {
	label, op, value string
	re               *regexp.Regexp
}

func (m matcher) matches(s series) bool {
	v := s.labels[m.label] // an absent label is ""
	switch m.op {
	case "=":
		return v == m.value
	case "!=":
		return v != m.value
	case "=~":
		return m.re.MatchString(v)
	default: // "!~"
		return !m.re.MatchString(v)
	}
}

func parseMatchers(text string) ([]matcher, error) {
	var out []matcher
	if strings.TrimSpace(text) == "" {
		return nil, nil
	}
	for part := range strings.SplitSeq(text, ",") {
		m := matcherRE.FindStringSubmatch(part)
		if m == nil {
			return nil, fmt.Errorf("cannot read label matcher %q", part)
		}
		mt := matcher{label: m[1], op: m[2], value: m[3]}
		if mt.op == "=~" || mt.op == "!~" {
			re, err := regexp.Compile("^(?:" + mt.value + ")$")
			if err != nil {
				return nil, fmt.Errorf("matcher %s: %w", part, err)
			}
			mt.re = re
		}
		out = append(out, mt)
	}
	return out, nil
}

// checkMonitoringExpr checks an expression against a scrape: each
// metric it names is exported, each selector selects at least one
// exported series (instance and job, which Prometheus adds, aside), each
// label it aggregates by and each label its results are shown with
// exists on the metrics it uses.
func checkMonitoringExpr(e monitoringExpr, fams map[string]*dto.MetricFamily) []error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", e.where, fmt.Sprintf(format, args...)))
	}
	known := map[string]bool{}
	for _, l := range targetLabels {
		known[l] = true
	}
	for _, m := range selectorRE.FindAllStringSubmatch(e.expr, -1) {
		name, braces, inner := m[1], m[2], m[3]
		f, bucket := resolveMetric(name, fams)
		if f == nil {
			fail("%s is not exported", name)
			continue
		}
		all := familySeries(f, bucket)
		for _, s := range all {
			for l := range s.labels {
				known[l] = true
			}
		}
		matchers, err := parseMatchers(inner)
		if err != nil {
			fail("%s: %v", name, err)
			continue
		}
		if e.needInstance && !slices.ContainsFunc(matchers, func(mt matcher) bool {
			return mt.label == "instance" && mt.op == "=~" && mt.value == "$instance"
		}) {
			fail(`%s%s does not filter on instance=~"$instance"`, name, braces)
		}
		var applied []matcher
		for _, mt := range matchers {
			if slices.Contains(targetLabels, mt.label) {
				continue
			}
			if strings.Contains(mt.value, "$") {
				fail("%s: a template variable in label %s", name, mt.label)
			}
			if !slices.ContainsFunc(all, func(s series) bool { _, ok := s.labels[mt.label]; return ok }) {
				fail("%s has no label %s", name, mt.label)
			}
			applied = append(applied, mt)
		}
		if !slices.ContainsFunc(all, func(s series) bool {
			for _, mt := range applied {
				if !mt.matches(s) {
					return false
				}
			}
			return true
		}) {
			fail("%s%s selects no exported series", name, braces)
		}
	}
	// The labels kept: those of every by clause if there is one.
	var kept map[string]bool
	for _, m := range byRE.FindAllStringSubmatch(e.expr, -1) {
		these := map[string]bool{}
		for l := range strings.SplitSeq(m[1], ",") {
			l = strings.TrimSpace(l)
			if l == "" {
				continue
			}
			these[l] = true
			if !known[l] {
				fail("aggregates by %s, a label of none of its metrics", l)
			}
		}
		if kept == nil {
			kept = these
		} else {
			for l := range kept {
				if !these[l] {
					delete(kept, l)
				}
			}
		}
	}
	for _, l := range e.shown {
		switch {
		case kept != nil && !kept[l]:
			fail("shows label %s, which its aggregation drops", l)
		case kept == nil && !known[l]:
			fail("shows label %s, a label of none of its metrics", l)
		}
	}
	return errs
}

// checkMonitoringNames checks that every smtp_interceptor_ name that text
// mentions (in descriptions and comments too) is exported.
func checkMonitoringNames(where, text string, fams map[string]*dto.MetricFamily) []error {
	var errs []error
	seen := map[string]bool{}
	for _, name := range metricNameRE.FindAllString(text, -1) {
		if seen[name] {
			continue
		}
		seen[name] = true
		if f, _ := resolveMetric(name, fams); f == nil {
			errs = append(errs, fmt.Errorf("%s names %s, which is not exported", where, name))
		}
	}
	return errs
}

func parseScrape(text string) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}
	return fams, nil
}

// checkMonitoring checks the dashboard and the rules against a scrape.
func checkMonitoring(dashboard []byte, rules string, fams map[string]*dto.MetricFamily) []error {
	dexprs, err := dashboardExprs(dashboard)
	errs := []error{}
	if err != nil {
		errs = append(errs, err)
	}
	rexprs, err := ruleExprs(rules)
	if err != nil {
		errs = append(errs, err)
	}
	for _, e := range append(dexprs, rexprs...) {
		errs = append(errs, checkMonitoringExpr(e, fams)...)
	}
	errs = append(errs, checkMonitoringNames("dashboard", string(dashboard), fams)...)
	errs = append(errs, checkMonitoringNames("rules", rules, fams)...)
	return errs
}

// monitoringScrape is a small scrape for TestMonitoringChecks.
const monitoringScrape = `# TYPE smtp_interceptor_verdicts_total counter
smtp_interceptor_verdicts_total{action="reject",control="blacklist",mode="enforce",stage="connect"} 2
smtp_interceptor_verdicts_total{action="accept",control="",mode="enforce",stage="data"} 5
# TYPE smtp_interceptor_state_backend_up gauge
smtp_interceptor_state_backend_up 1
# TYPE smtp_interceptor_request_duration_seconds histogram
smtp_interceptor_request_duration_seconds_bucket{protocol="policy",le="0.1"} 3
smtp_interceptor_request_duration_seconds_bucket{protocol="policy",le="+Inf"} 3
smtp_interceptor_request_duration_seconds_sum{protocol="policy"} 0.01
smtp_interceptor_request_duration_seconds_count{protocol="policy"} 3
`

// monitoringDashboard is a dashboard for TestMonitoringChecks, one panel
// with the target and legend given.
func monitoringDashboard(expr, legend string) string {
	b, _ := json.Marshal(map[string]any{
		"uid":           "smtp-interceptor",
		"schemaVersion": 39,
		"__inputs":      []any{map[string]any{"name": "DS_PROMETHEUS", "pluginId": "prometheus"}},
		"templating":    map[string]any{"list": []any{map[string]any{"name": "instance", "definition": "label_values(smtp_interceptor_state_backend_up, instance)"}}},
		"panels": []any{
			map[string]any{"id": 1, "type": "row", "title": "Row"},
			map[string]any{"id": 2, "type": "timeseries", "title": "Panel", "description": "What it shows.",
				"datasource": map[string]any{"uid": "${DS_PROMETHEUS}"},
				"targets":    []any{map[string]any{"refId": "A", "expr": expr, "legendFormat": legend}}},
		},
	})
	return string(b)
}

const monitoringRules = `groups:
  - name: smtp-interceptor
    rules:
      - alert: Down
        expr: |
          min by (job, instance) (
            smtp_interceptor_state_backend_up
          ) == 0
        for: 2m
        annotations:
          summary: "{{ $labels.instance }} down (smtp_interceptor_state_backend_up)"
      - alert: Refusing
        expr: sum by (control) (rate(smtp_interceptor_verdicts_total{action="reject"}[5m])) > 1
        annotations:
          summary: "{{ $labels.control }}"
`

// TestMonitoringChecks: the checks that TestDashboardsUseExportedMetrics
// applies find each kind of mistake.
func TestMonitoringChecks(t *testing.T) {
	good := `sum by (control) (rate(smtp_interceptor_verdicts_total{instance=~"$instance",mode="enforce",action=~"reject|tempfail"}[$__rate_interval]))`
	for _, tc := range []struct {
		name      string
		dashboard string
		rules     string
		want      []string // each in one error; none: no error
	}{
		{name: "good", dashboard: monitoringDashboard(good, "{{control}}"), rules: monitoringRules},
		{name: "histogram parts", dashboard: monitoringDashboard(
			`histogram_quantile(0.99, sum by (protocol, le) (rate(smtp_interceptor_request_duration_seconds_bucket{instance=~"$instance"}[5m]))) / sum(rate(smtp_interceptor_request_duration_seconds_count{instance=~"$instance"}[5m]))`,
			"{{protocol}}"), rules: monitoringRules},
		{name: "invalid JSON", dashboard: `{"uid": "smtp-interceptor", "panels": [`, rules: monitoringRules,
			want: []string{"dashboard: unexpected end of JSON input"}},
		{name: "no target", dashboard: strings.Replace(monitoringDashboard(good, ""), `"targets":[{`, `"targets":[],"x":[{`, 1), rules: monitoringRules,
			want: []string{"dashboard panel 2 (Panel): no target with an expression"}},
		{name: "no title", dashboard: strings.Replace(monitoringDashboard(good, ""), `"title":"Panel"`, `"title":""`, 1), rules: monitoringRules,
			want: []string{"dashboard panel 2 (): no title"}},
		{name: "row without title", dashboard: strings.Replace(monitoringDashboard(good, ""), `"title":"Row"`, `"title":""`, 1), rules: monitoringRules,
			want: []string{"dashboard panel 1 (): no title"}},
		{name: "no description", dashboard: strings.Replace(monitoringDashboard(good, ""), `"description":"What it shows."`, `"description":""`, 1), rules: monitoringRules,
			want: []string{"dashboard panel 2 (Panel): no description"}},
		{name: "other data source", dashboard: strings.Replace(monitoringDashboard(good, ""), `${DS_PROMETHEUS}`, `prom1`, 1), rules: monitoringRules,
			want: []string{"data source is not ${DS_PROMETHEUS}"}},
		{name: "wrong uid", dashboard: strings.Replace(monitoringDashboard(good, ""), `"uid":"smtp-interceptor"`, `"uid":"x"`, 1), rules: monitoringRules,
			want: []string{`uid "x"`}},
		{name: "unknown metric", dashboard: monitoringDashboard(`rate(smtp_interceptor_verdict_total{instance=~"$instance"}[5m])`, ""), rules: monitoringRules,
			want: []string{"target A: smtp_interceptor_verdict_total is not exported"}},
		{name: "_count of a counter", dashboard: monitoringDashboard(`rate(smtp_interceptor_verdicts_total_count{instance=~"$instance"}[5m])`, ""), rules: monitoringRules,
			want: []string{"smtp_interceptor_verdicts_total_count is not exported"}},
		{name: "no instance filter", dashboard: monitoringDashboard(`sum(smtp_interceptor_state_backend_up)`, ""), rules: monitoringRules,
			want: []string{`does not filter on instance=~"$instance"`}},
		{name: "unknown label", dashboard: monitoringDashboard(`sum(smtp_interceptor_verdicts_total{instance=~"$instance",verdict!="accept"})`, ""), rules: monitoringRules,
			want: []string{"smtp_interceptor_verdicts_total has no label verdict"}},
		{name: "value never exported", dashboard: monitoringDashboard(`sum(smtp_interceptor_verdicts_total{instance=~"$instance",action="refuse"})`, ""), rules: monitoringRules,
			want: []string{`selects no exported series`}},
		{name: "matchers together", dashboard: monitoringDashboard(`sum(smtp_interceptor_verdicts_total{instance=~"$instance",action="accept",control="blacklist"})`, ""), rules: monitoringRules,
			want: []string{`selects no exported series`}},
		{name: "aggregated by an unknown label", dashboard: monitoringDashboard(`sum by (site) (smtp_interceptor_verdicts_total{instance=~"$instance"})`, "{{site}}"), rules: monitoringRules,
			want: []string{"aggregates by site, a label of none of its metrics"}},
		{name: "legend label dropped", dashboard: monitoringDashboard(`sum by (control) (smtp_interceptor_verdicts_total{instance=~"$instance"})`, "{{stage}}"), rules: monitoringRules,
			want: []string{"shows label stage, which its aggregation drops"}},
		{name: "legend label unknown", dashboard: monitoringDashboard(`smtp_interceptor_verdicts_total{instance=~"$instance"}`, "{{site}}"), rules: monitoringRules,
			want: []string{"shows label site, a label of none of its metrics"}},
		{name: "description names a metric not exported", dashboard: strings.Replace(monitoringDashboard(good, ""), "What it shows.", "From smtp_interceptor_refusals_total.", 1), rules: monitoringRules,
			want: []string{"dashboard names smtp_interceptor_refusals_total, which is not exported"}},
		{name: "rule metric not exported", dashboard: monitoringDashboard(good, ""), rules: strings.Replace(monitoringRules, "\n            smtp_interceptor_state_backend_up", "\n            smtp_interceptor_redis_up", 1),
			want: []string{"alert Down: smtp_interceptor_redis_up is not exported"}},
		{name: "rule annotation label dropped", dashboard: monitoringDashboard(good, ""), rules: strings.Replace(monitoringRules, "{{ $labels.control }}", "{{ $labels.stage }}", 1),
			want: []string{"alert Refusing: shows label stage, which its aggregation drops"}},
		{name: "rule annotation names a metric not exported", dashboard: monitoringDashboard(good, ""), rules: strings.Replace(monitoringRules, "(smtp_interceptor_state_backend_up)", "(smtp_interceptor_backend_up)", 1),
			want: []string{"rules names smtp_interceptor_backend_up, which is not exported"}},
		{name: "rule without expr", dashboard: monitoringDashboard(good, ""), rules: strings.Replace(monitoringRules, "expr: sum by", "exp: sum by", 1),
			want: []string{"alert Refusing: no expr"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			fams, err := parseScrape(monitoringScrape)
			is.NoErr(err)
			errs := checkMonitoring([]byte(tc.dashboard), tc.rules, fams)
			for _, err := range errs {
				t.Log(err)
			}
			if len(tc.want) == 0 {
				is.Equal(len(errs), 0) // no error
			}
			for _, w := range tc.want {
				is.True(slices.ContainsFunc(errs, func(err error) bool { return strings.Contains(err.Error(), w) })) // the error is found
			}
		})
	}
}

var policyListeningRE = regexp.MustCompile(`msg="policy server listening" addr=(127\.0\.0\.1:\d+)`)

// TestDashboardsUseExportedMetrics runs the server with every feature the
// dashboard and the alerts watch (DNS lists, one of them suspended and one
// answering an error code, a shadowed control, a rate limit, a directory
// that cannot be reached, a TCP listener that allows nobody), gives it
// traffic that makes each labelled series appear, and checks the
// dashboard's and the alerts' expressions against its /metrics.
func TestDashboardsUseExportedMetrics(t *testing.T) {
	is := is.New(t)
	dashboard, err := os.ReadFile(dashboardFile)
	is.NoErr(err)
	rulesText, err := os.ReadFile(alertsFile)
	is.NoErr(err)
	dexprs, err := dashboardExprs(dashboard)
	if err != nil {
		t.Fatal(err) // invalid JSON, or a panel without title or target
	}
	rexprs, err := ruleExprs(string(rulesText))
	is.NoErr(err)
	is.True(len(rexprs) >= 5) // the alerts were read

	dnsAddr := startDNS(t, map[string]string{
		// RFC 5782 probes: 127.0.0.2 listed, 127.0.0.1 not, except by
		// world.test, which lists everyone and is suspended.
		"2.0.0.127.bl.test.":    "127.0.0.2",
		"2.0.0.127.err.test.":   "127.0.0.2",
		"2.0.0.127.wl.test.":    "127.0.0.2",
		"2.0.0.127.world.test.": "127.0.0.2",
		"1.0.0.127.world.test.": "127.0.0.2",
		"9.2.0.192.err.test.":   "127.255.255.254", // an error code
		"9.2.0.192.bl.test.":    "127.0.0.2",
		"8.2.0.192.wl.test.":    "127.0.0.2",
	})
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.toml")
	writeFile(t, cfgPath, fmt.Sprintf(`[server]
policy = ["unix:%[1]s/policy.sock", "127.0.0.1:0"]
milter = []
metrics = "127.0.0.1:0"
# TCP peers: nobody; unix-socket peers are not checked.
allow = ["192.0.2.250"]
metrics_allow = ["127.0.0.1"]
[log]
sessions = "%[1]s/sessions.log"
fail2ban = "%[1]s/fail2ban.log"
[dns]
resolver = %[2]q
timeout = "2s"
[blacklist]
hosts = ["192.0.2.66"]
[helo]
mode = "shadow"
deny = ["*dynamic*"]
[dns_whitelist]
enabled = true
sites = ["wl.test"]
action = "tag"
[dns_blacklist]
enabled = true
sites = ["err.test", "bl.test", "world.test"]
action = "reject"
%[3]s
[[ratelimit]]
name = "client-messages"
key = "client"
count = "messages"
limit = 1
per = "1h"
action = "tempfail"
`, dir, dnsAddr, directoryConfig(t, slapd.DeadURL(t))))
	ls := startLiveAt(t, cfgPath, dir)
	metricsURL := "http://" + ls.metricsAddr(t) + "/metrics"

	// world.test's probe finds it listing 127.0.0.1: suspended.
	waitFor(t, "world.test suspended", func() bool {
		return strings.Contains(httpGet(t, metricsURL), `smtp_interceptor_dns_site_suspended{site="world.test"} 1`)
	})
	p := ls.dial(t)
	for _, tc := range []struct{ ip, helo, instance, rcpt, reply string }{
		{"192.0.2.66", "x.example", "m.1", "a@domino.test", "550 5.7.1 Connection denied based on policy reason"},
		// err.test answers an error code (counted as not listed), bl.test lists.
		{"192.0.2.9", "x.example", "m.2", "a@domino.test", "550 5.7.1 Your host 192.0.2.9 was found in a DNS blacklist."},
		{"192.0.2.8", "x.example", "m.3", "a@domino.test", "PREPEND X-DNSWL-Site: wl.test"},
		{"192.0.2.5", "pc.dynamic.test", "m.4", "a@domino.test", "WARN smtp-interceptor would refuse: 550 5.7.1 HELO/EHLO not accepted"},
		{"192.0.2.20", "x.example", "m.5", "a@domino.test", "DUNNO"},
		{"192.0.2.20", "x.example", "m.6", "a@domino.test", "450 4.7.1 Rate limit exceeded, try again later"},
		{"192.0.2.21", "x.example", "m.7", "alice@acme.example", "451 4.4.3 Directory unavailable, try again later"},
	} {
		is.Equal(p.rcpt(tc.ip, tc.helo, tc.instance, tc.rcpt), tc.reply) // the reply the traffic is meant to get
	}

	// A request that is not name=value ends its connection.
	c, err := net.DialTimeout("unix", ls.sock, 5*time.Second)
	is.NoErr(err)
	defer c.Close()
	is.NoErr(c.SetDeadline(time.Now().Add(10 * time.Second)))
	_, err = c.Write([]byte("not a policy request\n\n"))
	is.NoErr(err)
	_, err = io.Copy(io.Discard, c)
	is.NoErr(err) // closed by the server

	// The TCP listener refuses 127.0.0.1 (not in [server] allow).
	var tcpAddr string
	waitFor(t, "the TCP policy listener", func() bool {
		m := policyListeningRE.FindStringSubmatch(ls.stderr.String())
		if m != nil {
			tcpAddr = m[1]
		}
		return m != nil
	})
	tcp, err := net.DialTimeout("tcp", tcpAddr, 5*time.Second)
	is.NoErr(err)
	defer tcp.Close()
	is.NoErr(tcp.SetDeadline(time.Now().Add(10 * time.Second)))
	_, err = io.Copy(io.Discard, tcp)
	is.NoErr(err) // closed at once

	var scrape string
	waitFor(t, "the refused connection counted", func() bool {
		scrape = httpGet(t, metricsURL)
		return strings.Contains(scrape, `smtp_interceptor_connections_refused_total{protocol="policy",reason="not_allowed"} 1`)
	})
	fams, err := parseScrape(scrape)
	is.NoErr(err)
	// The states the alerts watch for, reached by the running server.
	for _, want := range []string{
		`smtp_interceptor_dns_site_suspended{site="world.test"} 1`,
		`smtp_interceptor_dns_errors_total{site="err.test"} 1`,
		`smtp_interceptor_directory_up 0`,
		`smtp_interceptor_malformed_requests_total{protocol="policy",reason="line not name=value"} 1`,
	} {
		if !strings.Contains(scrape, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}

	errs := checkMonitoring(dashboard, string(rulesText), fams)
	for _, err := range errs {
		t.Error(err)
	}
	names := map[string]bool{}
	for _, e := range append(dexprs, rexprs...) {
		for _, n := range metricNameRE.FindAllString(e.expr, -1) {
			names[n] = true
		}
	}
	list := slices.Sorted(maps.Keys(names))
	t.Logf("%d dashboard and %d alert expressions, %d metric names checked: %s", len(dexprs), len(rexprs), len(list), strings.Join(list, " "))
	if t.Failed() {
		t.Log("scrape:\n" + scrape)
	}
}
