// Checks the chart's alert rules with Prometheus' own code (driven by
// tests/k8s/test_k8s_alert_rules.py, which renders the chart and writes both inputs):
//
//	RULES   a rules file (`groups:`) as Prometheus loads it: expressions, durations, labels and
//	        annotation templates must all be valid for Prometheus v3.
//	SCRIPT  a promqltest script (`load` series, `eval` an expression at a time, expected result)
//	        that feeds the alert expressions synthetic series and states when each one fires.
package promqlrules

import (
	"os"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/promqltest"
)

func TestRulesLoad(t *testing.T) {
	content, err := os.ReadFile(os.Getenv("RULES"))
	if err != nil {
		t.Fatal(err)
	}
	groups, errs := rulefmt.Parse(content, false, model.UTF8Validation)
	for _, e := range errs {
		t.Error(e)
	}
	if groups != nil && len(groups.Groups) == 0 {
		t.Error("no rule groups")
	}
}

func TestAlertScenarios(t *testing.T) {
	script, err := os.ReadFile(os.Getenv("SCRIPT"))
	if err != nil {
		t.Fatal(err)
	}
	engine := promqltest.NewTestEngine(t, false, 0, promqltest.DefaultMaxSamplesPerQuery)
	promqltest.RunTest(t, string(script), engine)
}
