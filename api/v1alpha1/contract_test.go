package v1alpha1_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/attune-io/attune/controllers/tuning"
	"github.com/attune-io/attune/engine/contract"
)

// apiSource is this package's source as the markers state it: for each
// named string type, its kubebuilder Enum marker and its constants; and
// every marker line.
type apiSource struct {
	enumMarker map[string][]string
	constants  map[string][]string
	markers    []string
	// fieldMarkers are the markers of each struct field, by "Type.Field".
	fieldMarkers map[string][]string
}

func parseAPI(t *testing.T) apiSource {
	t.Helper()
	fset := token.NewFileSet()
	src := apiSource{enumMarker: map[string][]string{}, constants: map[string][]string{}, fieldMarkers: map[string][]string{}}
	for _, name := range []string{"meditationprogram_types.go", "virtualworld_types.go"} {
		file, err := parser.ParseFile(fset, name, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		for _, group := range file.Comments {
			for _, c := range group.List {
				if text := strings.TrimSpace(strings.TrimPrefix(c.Text, "//")); strings.HasPrefix(text, "+") {
					src.markers = append(src.markers, text)
				}
			}
		}
		for _, decl := range file.Decls {
			gen, ok := decl.(*ast.GenDecl)
			if !ok {
				continue
			}
			for _, spec := range gen.Specs {
				switch s := spec.(type) {
				case *ast.TypeSpec:
					if st, ok := s.Type.(*ast.StructType); ok {
						for _, f := range st.Fields.List {
							if f.Doc == nil || len(f.Names) != 1 {
								continue
							}
							for _, c := range f.Doc.List {
								if text := strings.TrimSpace(strings.TrimPrefix(c.Text, "//")); strings.HasPrefix(text, "+") {
									key := s.Name.Name + "." + f.Names[0].Name
									src.fieldMarkers[key] = append(src.fieldMarkers[key], text)
								}
							}
						}
					}
					if gen.Doc == nil {
						continue
					}
					for _, c := range gen.Doc.List {
						if _, values, ok := strings.Cut(c.Text, "+kubebuilder:validation:Enum="); ok {
							src.enumMarker[s.Name.Name] = strings.Split(strings.TrimSpace(values), ";")
						}
					}
				case *ast.ValueSpec:
					typ, ok := s.Type.(*ast.Ident)
					if gen.Tok != token.CONST || !ok || len(s.Values) != 1 {
						continue
					}
					if lit, ok := s.Values[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						v, err := strconv.Unquote(lit.Value)
						if err != nil {
							t.Fatal(err)
						}
						src.constants[typ.Name] = append(src.constants[typ.Name], v)
					}
				}
			}
		}
	}
	return src
}

func sameSet(a, b []string) bool {
	a, b = slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b))
	return slices.Equal(a, b)
}

// TestEnumsAreTheContracts: every enumeration the API shares with the
// engines — its kubebuilder Enum marker, which the API server enforces,
// and its Go constants — lists exactly what engine/contract lists.
func TestEnumsAreTheContracts(t *testing.T) {
	src := parseAPI(t)
	for typ, want := range map[string][]string{
		"Intervention": contract.Interventions,
		"WorldContext": contract.Contexts,
		"StoreType":    contract.StoreTypes,
		"ModelRuntime": contract.ModelRuntimes,
	} {
		if got := src.enumMarker[typ]; !sameSet(got, want) {
			t.Errorf("%s: Enum marker %v, the contract %v", typ, got, want)
		}
		if got := src.constants[typ]; !sameSet(got, want) {
			t.Errorf("%s: constants %v, the contract %v", typ, got, want)
		}
	}

	// The labels a model sidecar may name are the engine's affect labels.
	labels := regexp.MustCompile(`l\.lowerAscii\(\) in \[([^\]]*)\]`)
	found := false
	for _, m := range src.markers {
		match := labels.FindStringSubmatch(m)
		if match == nil {
			continue
		}
		found = true
		var got []string
		for _, l := range strings.Split(match[1], ",") {
			got = append(got, strings.Trim(strings.TrimSpace(l), "'"))
		}
		if !sameSet(got, contract.AffectLabels) {
			t.Errorf("spec.engine.model.labels rule lists %v, the contract %v", got, contract.AffectLabels)
		}
	}
	if !found {
		t.Error("no CEL rule on spec.engine.model.labels found")
	}
}

// TestTuningIsTheTuners: the tuning modes are the tuner's (the reconciler
// converts one into the other), and status.history's maxItems is the
// tuner's HistoryLimit.
func TestTuningIsTheTuners(t *testing.T) {
	src := parseAPI(t)
	modes := []string{string(tuning.ModeAuto), string(tuning.ModeManual), string(tuning.ModePaused)}
	if got := src.enumMarker["TuningMode"]; !sameSet(got, modes) {
		t.Errorf("TuningMode Enum marker %v, the tuner's modes %v", got, modes)
	}
	if got := src.constants["TuningMode"]; !sameSet(got, modes) {
		t.Errorf("TuningMode constants %v, the tuner's modes %v", got, modes)
	}
	markers := src.fieldMarkers["MeditationProgramStatus.History"]
	if want := "+kubebuilder:validation:MaxItems=" + strconv.Itoa(tuning.HistoryLimit); !slices.Contains(markers, want) {
		t.Errorf("status.history markers %v, want %s (the tuner's HistoryLimit)", markers, want)
	}
}
